package controlapi

import (
	"net/http"

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
	var batch session.TranscriptBatch
	if err := decodeInternal(c, &batch); err != nil {
		return err
	}
	acked, err := s.lifecycle.Transcript(c.Request().Context(), id, token, batch)
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, session.TranscriptAck{AckedSeq: acked})
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
func (s *Server) handleVMHeartbeat(c echo.Context) error {
	id, token, err := vmCredentials(c)
	if err != nil {
		return err
	}
	var hb session.Heartbeat
	if c.Request().ContentLength != 0 {
		if err := decodeInternal(c, &hb); err != nil {
			return err
		}
	}
	ans, err := s.lifecycle.Heartbeat(c.Request().Context(), id, token, hb)
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, ans)
}

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
