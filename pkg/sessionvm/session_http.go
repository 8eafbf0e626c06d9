package sessionvm

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"math/rand/v2"
	"mime"
	"net/http"
	"time"

	"github.com/interviewvm/controlplane/pkg/realtime"
	"github.com/interviewvm/controlplane/pkg/session"
)

// Limits of the session endpoints.
const (
	// maxOffer bounds an SDP offer.
	maxOffer = 64 << 10
	// maxCallBody bounds POST /session/call's JSON.
	maxCallBody = 4 << 10
	// offerTimeout bounds answering an offer (creating the call included).
	offerTimeout = 20 * time.Second
)

// handleSDP handles "POST /session/sdp": an application/sdp offer in, 201
// with the application/sdp answer out. A malformed offer is 400
// invalid_request; an offer while a call is live (or after the end) is 409
// conflict.
func (v *vm) handleSDP(w http.ResponseWriter, r *http.Request) {
	if mt, _, err := mime.ParseMediaType(r.Header.Get("Content-Type")); err != nil || mt != "application/sdp" {
		writeError(w, session.Errorf(session.EINVALID, "Content-Type must be application/sdp"))
		return
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxOffer))
	if err != nil {
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			writeError(w, session.Errorf(session.ETOOLARGE, "the SDP offer exceeds %d bytes", maxOffer))
			return
		}
		writeError(w, session.Errorf(session.EINVALID, "read the SDP offer: %v", err))
		return
	}
	offer := string(body)
	if err := realtime.CheckOffer(offer); err != nil {
		writeError(w, session.Errorf(session.EINVALID, "%v", err))
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), offerTimeout)
	defer cancel()
	answer, err := v.brk.offer(ctx, offer)
	if err != nil {
		v.writeBrokerError(w, "answer offer", err)
		return
	}
	w.Header().Set("Content-Type", "application/sdp")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(http.StatusCreated)
	_, _ = io.WriteString(w, answer)
}

// handleToken handles "POST /session/token": 200 {value, expires_at,
// model}, an ephemeral client secret for a browser that connects to the
// interviewer directly and then reports its call at /session/call. The
// simulated interviewer has no tokens: 409 conflict.
func (v *vm) handleToken(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := context.WithTimeout(r.Context(), offerTimeout)
	defer cancel()
	tok, err := v.brk.token(ctx)
	if err != nil {
		v.writeBrokerError(w, "mint client secret", err)
		return
	}
	w.Header().Set("Cache-Control", "no-store")
	writeJSON(w, http.StatusOK, tok)
}

// handleCall handles "POST /session/call" {"call_id":"rtc_…"}: 204 once
// the VM follows the call the browser made with a token.
func (v *vm) handleCall(w http.ResponseWriter, r *http.Request) {
	var req struct {
		CallID string `json:"call_id"`
	}
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, maxCallBody))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&req); err != nil {
		writeError(w, session.Errorf(session.EINVALID, "want a JSON body {\"call_id\":\"rtc_…\"}"))
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), offerTimeout)
	defer cancel()
	if err := v.brk.attach(ctx, req.CallID); err != nil {
		v.writeBrokerError(w, "attach call", err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

// writeBrokerError answers a broker failure: domain errors as they are,
// anything else as a 500 whose cause is only logged.
func (v *vm) writeBrokerError(w http.ResponseWriter, what string, err error) {
	if session.ErrorCode(err) == session.EINTERNAL {
		v.log.Error(what, "error", err)
	} else {
		v.log.Info(what+" refused", "code", session.ErrorCode(err), "message", session.ErrorMessage(err))
	}
	writeError(w, err)
}

// writeError writes the contract's error body {"error":{"code","message"}}
// with the status of the error's code.
func writeError(w http.ResponseWriter, err error) {
	code := session.ErrorCode(err)
	msg := session.ErrorMessage(err)
	writeJSON(w, statusOf(code), map[string]any{"error": map[string]string{"code": code, "message": msg}})
}

// statusOf maps a contract error code to its HTTP status.
func statusOf(code string) int {
	switch code {
	case session.EINVALID:
		return http.StatusBadRequest
	case session.EUNAUTHENTICATED:
		return http.StatusUnauthorized
	case session.EFORBIDDEN:
		return http.StatusForbidden
	case session.ENOTFOUND:
		return http.StatusNotFound
	case session.ECONFLICT:
		return http.StatusConflict
	case session.ETOOLARGE:
		return http.StatusRequestEntityTooLarge
	case session.ERATELIMITED:
		return http.StatusTooManyRequests
	case session.EUNAVAILABLE:
		return http.StatusServiceUnavailable
	}
	return http.StatusInternalServerError
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

// jitter adds up to 25% to d.
func jitter(d time.Duration) time.Duration {
	if j := int64(d / 4); j > 0 {
		return d + time.Duration(rand.Int64N(j))
	}
	return d
}
