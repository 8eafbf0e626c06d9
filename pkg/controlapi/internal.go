package controlapi

import (
	"net/http"
	"unicode/utf8"

	"github.com/labstack/echo/v4"

	"github.com/interviewvm/controlplane/pkg/session"
)

// handleVMTranscript handles "POST /internal/v1/sessions/{id}/transcript":
// a batch of segments, stored idempotently; the answer acknowledges the
// highest seq up to which nothing is missing.
func (s *Server) handleVMTranscript(c echo.Context) error {
	id, token, err := vmCredentials(c)
	if err != nil {
		return err
	}
	batch, err := decodeTranscript(c) // decodeInternal, faster (transcriptbody.go)
	if err != nil {
		return err
	}
	acked, err := s.lifecycle.Transcript(c.Request().Context(), id, token, batch)
	if err != nil {
		return err
	}
	return writeTranscriptAck(c, acked)
}

// vmCredentials reads a VM's session id and bearer token. A wrong token
// and an unknown session both answer 401, so the internal routes reveal
// nothing about other sessions.
func vmCredentials(c echo.Context) (id, token string, err error) {
	token, err = bearer(c)
	if err != nil {
		return "", "", err
	}
	id, err = pathID(c, "id")
	if err != nil {
		return "", "", session.Errorf(session.EUNAUTHENTICATED, "invalid session token")
	}
	return id, token, nil
}

// handleVMConfig handles "GET /internal/v1/sessions/{id}/config".
func (s *Server) handleVMConfig(c echo.Context) error {
	id, token, err := vmCredentials(c)
	if err != nil {
		return err
	}
	cfg, err := s.lifecycle.VMConfig(c.Request().Context(), id, token)
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, cfg)
}

// handleVMReady handles "POST /internal/v1/sessions/{id}/ready".
func (s *Server) handleVMReady(c echo.Context) error {
	id, token, err := vmCredentials(c)
	if err != nil {
		return err
	}
	var req session.ReadyRequest
	if c.Request().ContentLength != 0 {
		if err := decodeInternal(c, &req); err != nil {
			return err
		}
	}
	if err := s.lifecycle.Ready(c.Request().Context(), id, token, req); err != nil {
		return err
	}
	return c.NoContent(http.StatusNoContent)
}

// handleVMHeartbeat handles "POST /internal/v1/sessions/{id}/heartbeat".
// The route skips the generic spec validation (routes.go): the path id and
// the body are checked here, as the spec describes them.
func (s *Server) handleVMHeartbeat(c echo.Context) error {
	if _, err := pathID(c, "id"); err != nil {
		return err
	}
	id, token, err := vmCredentials(c)
	if err != nil {
		return err
	}
	var hb session.Heartbeat
	if c.Request().ContentLength != 0 {
		if err := s.decodeHeartbeat(c, &hb); err != nil {
			return err
		}
		if err := validHeartbeat(hb); err != nil {
			return err
		}
	}
	ans, err := s.lifecycle.Heartbeat(c.Request().Context(), id, token, hb)
	if err != nil {
		return err
	}
	if ans == (session.HeartbeatAnswer{Action: session.ActionContinue}) {
		// Nearly every answer: written as is, without an encoder.
		return c.JSONBlob(http.StatusOK, continueAnswer)
	}
	return c.JSON(http.StatusOK, ans)
}

// continueAnswer is the encoded answer "continue", as c.JSON writes it.
var continueAnswer = []byte(`{"action":"continue"}` + "\n")

// handleVMEnded handles "POST /internal/v1/sessions/{id}/ended".
func (s *Server) handleVMEnded(c echo.Context) error {
	id, token, err := vmCredentials(c)
	if err != nil {
		return err
	}
	var req session.Ended
	if err := decodeInternal(c, &req); err != nil {
		return err
	}
	if err := s.lifecycle.Ended(c.Request().Context(), id, token, req); err != nil {
		return err
	}
	return c.NoContent(http.StatusNoContent)
}

// maxSideband is the spec's maxLength of a heartbeat's sideband state.
const maxSideband = 200

// validHeartbeat checks a heartbeat as the spec's Heartbeat schema does
// (unknown fields and wrong types are refused by the decoder).
func validHeartbeat(hb session.Heartbeat) error {
	switch {
	case hb.LastSeq < 0, hb.AckedSeq < 0, hb.BufferedSegments < 0, hb.Retries < 0:
		return session.Errorf(session.EINVALID, "last_seq, acked_seq, buffered_segments and retries must not be negative")
	case utf8.RuneCountInString(hb.Sideband) > maxSideband:
		return session.Errorf(session.EINVALID, "sideband must be at most %d characters", maxSideband)
	}
	return nil
}
