package controlapi

import (
	"bytes"
	"context"
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"time"

	"github.com/google/uuid"
	"github.com/labstack/echo/v4"

	"github.com/interviewvm/controlplane/pkg/session"
)

// Idempotency keys on creating requests, kept per tenant in PostgreSQL so
// they hold across replicas and restarts:
//
//   - the same key with the same request (method, path, body) within
//     idempotencyTTL replays the first answer with Idempotent-Replayed: true;
//   - the same key with another request: 422 idempotency_key_reused;
//   - the same key while the first request runs: 409
//     idempotency_key_in_flight;
//   - a 5xx answer is not kept (the key is released, a retry runs again);
//     4xx answers are kept and replayed, as successes are.
//
// The key itself is stored only hashed, and the stored answer (which may
// hold a new API key's secret or a candidate's e-mail) is encrypted with a
// key derived from the Idempotency-Key, which only the client holds. The
// leader's reconciler deletes expired keys; an expired key that is sent
// again is simply taken anew.

const (
	headerIdempotencyKey    = "Idempotency-Key"
	headerIdempotentReplay  = "Idempotent-Replayed"
	idempotencyTTL          = 24 * time.Hour
	maxIdempotencyKeyLength = 255
	// idempotencyLease is how long a request may hold its key before a
	// retry of the same request takes it over (its controller died).
	idempotencyLease = time.Minute
	// maxStoredAnswer bounds the answer kept for replay; a larger one is
	// not kept (the key is released).
	maxStoredAnswer = 1 << 20
)

func checkIdempotencyKey(k string) error {
	if len(k) < 1 || len(k) > maxIdempotencyKeyLength {
		return session.Errorf(session.EINVALID, "Idempotency-Key must be 1 to %d characters", maxIdempotencyKeyLength)
	}
	for i := 0; i < len(k); i++ {
		if k[i] < 0x20 || k[i] > 0x7e {
			return session.Errorf(session.EINVALID, "Idempotency-Key must be printable ASCII")
		}
	}
	return nil
}

func digest(parts ...[]byte) []byte {
	h := sha256.New()
	for _, p := range parts {
		fmt.Fprintf(h, "%d:", len(p))
		h.Write(p)
	}
	return h.Sum(nil)
}

// answerCipher is the AEAD stored answers are sealed with: its key derives
// from the Idempotency-Key (the stored hash of which is another digest).
func answerCipher(idemKey string) (cipher.AEAD, error) {
	block, err := aes.NewCipher(digest([]byte("idempotent answer key"), []byte(idemKey)))
	if err != nil {
		return nil, err
	}
	return cipher.NewGCM(block)
}

func sealAnswer(idemKey string, reqHash, plain []byte) ([]byte, error) {
	aead, err := answerCipher(idemKey)
	if err != nil {
		return nil, err
	}
	nonce := make([]byte, aead.NonceSize())
	if _, err := rand.Read(nonce); err != nil {
		return nil, err
	}
	return aead.Seal(nonce, nonce, plain, reqHash), nil
}

func openAnswer(idemKey string, reqHash, sealed []byte) ([]byte, error) {
	aead, err := answerCipher(idemKey)
	if err != nil {
		return nil, err
	}
	if len(sealed) < aead.NonceSize() {
		return nil, errors.New("stored answer too short")
	}
	return aead.Open(nil, sealed[:aead.NonceSize()], sealed[aead.NonceSize():], reqHash)
}

// idempotent is the middleware of the creating operations (idempotentOps).
// It runs after authentication, so the principal's tenant is known.
func (s *Server) idempotent(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) error {
		req := c.Request()
		values, sent := req.Header[headerIdempotencyKey]
		if !sent {
			return next(c)
		}
		if len(values) != 1 {
			return session.Errorf(session.EINVALID, "send one Idempotency-Key")
		}
		idemKey := values[0]
		if err := checkIdempotencyKey(idemKey); err != nil {
			return err
		}
		body, err := io.ReadAll(req.Body)
		if err != nil {
			var tooLarge *http.MaxBytesError
			var he *echo.HTTPError
			switch {
			case errors.As(err, &tooLarge):
				return session.Errorf(session.ETOOLARGE, "request body too large")
			case errors.As(err, &he):
				return he // echo's body limit: 413
			}
			return session.Errorf(session.EINVALID, "unreadable request body")
		}
		req.Body = io.NopCloser(bytes.NewReader(body))
		keyHash := digest([]byte("idempotency key"), []byte(idemKey))
		reqHash := digest([]byte(req.Method), []byte(req.URL.RequestURI()), body)
		claim := uuid.NewString()
		scope := principal(c).Scope()
		ctx := req.Context()
		rec, err := s.catalog.ClaimIdempotencyKey(ctx, scope, session.IdempotencyRequest{
			KeyHash: keyHash, RequestHash: reqHash, Claim: claim, TTL: idempotencyTTL, Lease: idempotencyLease,
		})
		if err != nil {
			return err
		}
		if !rec.Claimed {
			return s.replay(c, idemKey, reqHash, rec)
		}

		release := func(ctx context.Context) {
			s.metrics.idempotency.WithLabelValues("released").Inc()
			if err := s.catalog.ReleaseIdempotencyKey(ctx, scope, keyHash, claim); err != nil {
				s.logger.Error("release idempotency key", "error", err,
					"request_id", c.Response().Header().Get(echo.HeaderXRequestID))
			}
		}
		defer func() {
			// A handler that panics must not hold the key until its lease
			// ends.
			if p := recover(); p != nil {
				release(context.WithoutCancel(ctx))
				panic(p)
			}
		}()
		rw := &teeWriter{ResponseWriter: c.Response().Writer}
		c.Response().Writer = rw
		err = next(c)
		if err != nil {
			c.Error(err) // write the error answer here, so it is kept too
		}
		c.Response().Writer = rw.ResponseWriter

		// The client may be gone: keep or release the key all the same.
		bg, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		status := c.Response().Status
		if status >= 500 || rw.overflow || !c.Response().Committed {
			release(bg)
			return nil
		}
		s.metrics.idempotency.WithLabelValues("stored").Inc()
		sealed, err := sealAnswer(idemKey, reqHash, rw.body.Bytes())
		if err == nil {
			err = s.catalog.CompleteIdempotencyKey(bg, scope, keyHash, claim, status,
				c.Response().Header().Get(echo.HeaderContentType), sealed, answerSubjects(rw.body.Bytes()))
		}
		if err != nil {
			s.logger.Error("store idempotent answer", "error", err,
				"request_id", c.Response().Header().Get(echo.HeaderXRequestID))
		}
		return nil
	}
}

// replay answers from the record of a key that another request holds.
func (s *Server) replay(c echo.Context, idemKey string, reqHash []byte, rec session.IdempotencyRecord) error {
	if !bytes.Equal(rec.RequestHash, reqHash) {
		s.metrics.idempotency.WithLabelValues("reused").Inc()
		return session.Errorf(session.EIDEMPOTENCYREUSED,
			"this Idempotency-Key was used for another request in the last 24 hours")
	}
	if rec.Status == 0 {
		s.metrics.idempotency.WithLabelValues("in_flight").Inc()
		return session.Errorf(session.EIDEMPOTENCYINFLIGHT,
			"a request with this Idempotency-Key is still running; retry later")
	}
	plain, err := openAnswer(idemKey, reqHash, rec.Response)
	if err != nil {
		return fmt.Errorf("open stored idempotent answer: %w", err)
	}
	s.metrics.idempotency.WithLabelValues("replayed").Inc()
	c.Response().Header().Set(headerIdempotentReplay, "true")
	if rec.ContentType == "" {
		return c.NoContent(rec.Status)
	}
	return c.Blob(rec.Status, rec.ContentType, plain)
}

// teeWriter passes an answer through and keeps a copy of its body.
type teeWriter struct {
	http.ResponseWriter
	body     bytes.Buffer
	overflow bool
}

func (w *teeWriter) Write(p []byte) (int, error) {
	if !w.overflow {
		if w.body.Len()+len(p) > maxStoredAnswer {
			w.overflow = true
			w.body.Reset()
		} else {
			w.body.Write(p)
		}
	}
	return w.ResponseWriter.Write(p)
}

// Unwrap lets http.ResponseController reach the connection's writer.
func (w *teeWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// answerSubjects returns the ids a stored answer names (its "id" and
// "candidate_id"), so that erasing a candidate or an interview can erase
// the stored answers that hold their data.
func answerSubjects(body []byte) []string {
	var v struct {
		ID          string `json:"id"`
		CandidateID string `json:"candidate_id"`
	}
	if json.Unmarshal(body, &v) != nil {
		return nil
	}
	var ids []string
	for _, id := range []string{v.ID, v.CandidateID} {
		if _, err := uuid.Parse(id); err == nil {
			ids = append(ids, id)
		}
	}
	return ids
}
