package controlapi

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math"
	"net/http"
	"strings"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/interviewvm/controlplane/pkg/session"
)

// This file holds what a customer's product needs beyond creating:
// partial updates, erasure, its own references (external_id, metadata),
// and the transcript stream for EventSource (?access_token=).

// checkExternalID checks a customer's external id.
func checkExternalID(v string) error {
	if n := len([]rune(v)); n < 1 || n > session.MaxExternalIDLen || strings.TrimSpace(v) == "" || !storable(v) {
		return session.Errorf(session.EINVALID, "external_id must be 1 to %d characters", session.MaxExternalIDLen)
	}
	return nil
}

// checkMetadata checks a customer's metadata map.
func checkMetadata(m map[string]string) error {
	if len(m) > session.MaxMetadataPairs {
		return session.Errorf(session.EINVALID, "metadata must have at most %d pairs", session.MaxMetadataPairs)
	}
	for k, v := range m {
		if n := len([]rune(k)); n < 1 || n > session.MaxMetadataKeyLen || !storable(k) {
			return session.Errorf(session.EINVALID, "metadata keys must be 1 to %d characters", session.MaxMetadataKeyLen)
		}
		if len([]rune(v)) > session.MaxMetadataValueLen || !storable(v) {
			return session.Errorf(session.EINVALID, "metadata[%q] must be at most %d characters", k, session.MaxMetadataValueLen)
		}
	}
	return nil
}

// optionalExternalID reads a patch's external_id: absent (unchanged), null
// (cleared) or a string.
func optionalExternalID(raw json.RawMessage) (session.OptionalString, error) {
	if raw == nil {
		return session.OptionalString{}, nil
	}
	if bytes.Equal(bytes.TrimSpace(raw), []byte("null")) {
		return session.OptionalString{Set: true}, nil
	}
	var v string
	if err := json.Unmarshal(raw, &v); err != nil {
		return session.OptionalString{}, session.Errorf(session.EINVALID, "external_id must be a string or null")
	}
	if err := checkExternalID(v); err != nil {
		return session.OptionalString{}, err
	}
	return session.OptionalString{Set: true, Value: &v}, nil
}

// competencies checks a position's competencies: names unique within the
// position (insights score per name), weights above 0.
func competencies(in []competencyInput) ([]session.Competency, error) {
	if len(in) == 0 || len(in) > 50 {
		return nil, session.Errorf(session.EINVALID, "competencies must list 1 to 50 items")
	}
	seen := map[string]bool{}
	out := make([]session.Competency, 0, len(in))
	for i, ci := range in {
		if err := checkText(fmt.Sprintf("competencies[%d].name", i), ci.Name, 1, maxNameLen); err != nil {
			return nil, err
		}
		name := strings.TrimSpace(ci.Name)
		if key := strings.ToLower(name); seen[key] {
			return nil, session.Errorf(session.EINVALID, "competencies[%d].name %q is listed twice", i, name)
		} else {
			seen[key] = true
		}
		if ci.Weight == nil || !(*ci.Weight > 0) || math.IsInf(*ci.Weight, 0) {
			return nil, session.Errorf(session.EINVALID, "competencies[%d].weight must be a number greater than 0", i)
		}
		if err := checkText(fmt.Sprintf("competencies[%d].description", i), ci.Description, 0, 2000); err != nil {
			return nil, err
		}
		out = append(out, session.Competency{Name: name, Weight: *ci.Weight, Description: ci.Description})
	}
	return out, nil
}

type positionPatchInput struct {
	Title        *string           `json:"title"`
	Description  *string           `json:"description"`
	Competencies []competencyInput `json:"competencies"`
}

// handlePositionPatch handles "PATCH /v1/positions/{id}".
func (s *Server) handlePositionPatch(c echo.Context) error {
	id, err := pathID(c, "id")
	if err != nil {
		return err
	}
	var in positionPatchInput
	if err := decode(c, &in); err != nil {
		return err
	}
	var patch session.PositionPatch
	if in.Title != nil {
		if err := checkText("title", *in.Title, 1, maxNameLen); err != nil {
			return err
		}
		t := strings.TrimSpace(*in.Title)
		patch.Title = &t
	}
	if in.Description != nil {
		if err := checkText("description", *in.Description, 0, 10000); err != nil {
			return err
		}
		patch.Description = in.Description
	}
	if in.Competencies != nil {
		if patch.Competencies, err = competencies(in.Competencies); err != nil {
			return err
		}
	}
	out, err := s.catalog.PatchPosition(c.Request().Context(), principal(c).Scope(), id, patch)
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, out)
}

// handlePositionDelete handles "DELETE /v1/positions/{id}".
func (s *Server) handlePositionDelete(c echo.Context) error {
	id, err := pathID(c, "id")
	if err != nil {
		return err
	}
	if err := s.catalog.DeletePosition(c.Request().Context(), principal(c).Scope(), id); err != nil {
		return err
	}
	return c.NoContent(http.StatusNoContent)
}

type candidatePatchInput struct {
	FullName   *string           `json:"full_name"`
	Email      *string           `json:"email"`
	ExternalID json.RawMessage   `json:"external_id"`
	Metadata   map[string]string `json:"metadata"`
}

// handleCandidatePatch handles "PATCH /v1/candidates/{id}".
func (s *Server) handleCandidatePatch(c echo.Context) error {
	id, err := pathID(c, "id")
	if err != nil {
		return err
	}
	var in candidatePatchInput
	if err := decode(c, &in); err != nil {
		return err
	}
	var patch session.CandidatePatch
	if in.FullName != nil {
		if err := checkText("full_name", *in.FullName, 1, maxNameLen); err != nil {
			return err
		}
		n := strings.TrimSpace(*in.FullName)
		patch.FullName = &n
	}
	if in.Email != nil {
		e, err := checkEmail(*in.Email)
		if err != nil {
			return err
		}
		patch.Email = &e
	}
	if patch.ExternalID, err = optionalExternalID(in.ExternalID); err != nil {
		return err
	}
	if in.Metadata != nil {
		if err := checkMetadata(in.Metadata); err != nil {
			return err
		}
		patch.Metadata = in.Metadata
	}
	out, err := s.catalog.PatchCandidate(c.Request().Context(), principal(c).Scope(), id, patch)
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, out)
}

// handleCandidateDelete handles "DELETE /v1/candidates/{id}": the right to
// erasure. Live interviews of the candidate are cancelled and their
// machines destroyed first; then the candidate and every interview of theirs,
// with transcripts and timelines, go in one transaction.
func (s *Server) handleCandidateDelete(c echo.Context) error {
	id, err := pathID(c, "id")
	if err != nil {
		return err
	}
	ctx, scope := c.Request().Context(), principal(c).Scope()
	ivs, err := s.catalog.CandidateInterviews(ctx, scope, id)
	if err != nil {
		return err
	}
	for _, iv := range ivs {
		if err := s.lifecycle.Retire(ctx, scope, iv.ID); err != nil {
			return err
		}
	}
	if err := s.catalog.DeleteCandidate(ctx, scope, id); err != nil {
		return err
	}
	s.logger.Info("candidate erased", "request_id", c.Response().Header().Get(echo.HeaderXRequestID),
		"candidate_id", id, "interviews", len(ivs))
	return c.NoContent(http.StatusNoContent)
}

type interviewPatchInput struct {
	MaxDurationS *int              `json:"max_duration_s"`
	ExternalID   json.RawMessage   `json:"external_id"`
	Metadata     map[string]string `json:"metadata"`
	ScheduledAt  *string           `json:"scheduled_at"`
	Region       *string           `json:"region"`
}

// handleInterviewPatch handles "PATCH /v1/interviews/{id}": only while the
// interview is scheduled.
func (s *Server) handleInterviewPatch(c echo.Context) error {
	id, err := pathID(c, "id")
	if err != nil {
		return err
	}
	var in interviewPatchInput
	if err := decode(c, &in); err != nil {
		return err
	}
	var patch session.InterviewPatch
	if in.MaxDurationS != nil {
		if err := s.checkMaxDuration(*in.MaxDurationS); err != nil {
			return err
		}
		patch.MaxDurationS = in.MaxDurationS
	}
	if patch.ExternalID, err = optionalExternalID(in.ExternalID); err != nil {
		return err
	}
	if in.Metadata != nil {
		if err := checkMetadata(in.Metadata); err != nil {
			return err
		}
		patch.Metadata = in.Metadata
	}
	if in.ScheduledAt != nil {
		t, err := parseScheduledAt(*in.ScheduledAt)
		if err != nil {
			return err
		}
		patch.ScheduledAt = &t
	}
	if in.Region != nil {
		if err := s.checkRegion(*in.Region); err != nil {
			return err
		}
		patch.Region = in.Region
	}
	out, err := s.catalog.PatchInterview(c.Request().Context(), principal(c).Scope(), id, patch)
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, out)
}

// handleInterviewDelete handles "DELETE /v1/interviews/{id}": a live
// interview is cancelled and its machine destroyed first; then it is erased
// with its transcript and timeline.
func (s *Server) handleInterviewDelete(c echo.Context) error {
	id, err := pathID(c, "id")
	if err != nil {
		return err
	}
	ctx, scope := c.Request().Context(), principal(c).Scope()
	if err := s.lifecycle.Retire(ctx, scope, id); err != nil {
		return err
	}
	if err := s.catalog.DeleteInterview(ctx, scope, id); err != nil {
		return err
	}
	s.logger.Info("interview erased", "request_id", c.Response().Header().Get(echo.HeaderXRequestID), "session_id", id)
	return c.NoContent(http.StatusNoContent)
}

func (s *Server) checkMaxDuration(v int) error {
	maxS := int(s.cfg.MaxDuration / time.Second)
	if v < 1 || v > maxS {
		return session.Errorf(session.EINVALID, "max_duration_s must be between 1 and %d", maxS)
	}
	return nil
}

// accessTokenKey holds the ?access_token= of a request, moved out of its URL.
const accessTokenKey = "url_access_token"

// takeAccessToken runs before routing and logging: it moves
// ?access_token= out of the request's URL into the context, so no log
// line, metric label or error message can carry it.
func takeAccessToken(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) error {
		req := c.Request()
		if req.URL.RawQuery == "" {
			return next(c)
		}
		q := req.URL.Query()
		if tok, ok := q["access_token"]; ok {
			c.Set(accessTokenKey, strings.Join(tok, ","))
			q.Del("access_token")
			req.URL.RawQuery = q.Encode()
			req.RequestURI = req.URL.RequestURI()
		}
		return next(c)
	}
}

// requireStream authenticates the transcript stream: the tenant JWT in
// Authorization, or, for EventSource, the interview's own access token in
// ?access_token= — never a tenant credential in a URL.
func (s *Server) requireStream(next echo.HandlerFunc) echo.HandlerFunc {
	tenant := s.tenantAuth(true, next)
	return func(c echo.Context) error {
		raw, inURL := c.Get(accessTokenKey).(string)
		if !inURL {
			return tenant(c)
		}
		id, err := pathID(c, "id")
		if err != nil {
			return err
		}
		p, err := s.auth.Session(raw)
		if err != nil {
			return session.Errorf(session.EUNAUTHENTICATED, "access_token must be this interview's access token (connect.access_token); other credentials go in the Authorization header")
		}
		if p.InterviewID != id {
			return session.Errorf(session.ENOTFOUND, "not found")
		}
		c.Set(principalKey, p)
		return next(c)
	}
}
