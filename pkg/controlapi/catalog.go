package controlapi

import (
	"net/http"
	"strings"

	"github.com/labstack/echo/v4"

	"github.com/interviewvm/controlplane/pkg/session"
)

// handlePositionList handles "GET /v1/positions?limit=&cursor=".
func (s *Server) handlePositionList(c echo.Context) error {
	p, err := page(c)
	if err != nil {
		return err
	}
	items, next, err := s.catalog.ListPositions(c.Request().Context(), principal(c).Scope(), p)
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, newList(items, next))
}

// handleCandidateList handles "GET /v1/candidates?limit=&cursor=".
func (s *Server) handleCandidateList(c echo.Context) error {
	p, err := page(c)
	if err != nil {
		return err
	}
	items, next, err := s.catalog.ListCandidates(c.Request().Context(), principal(c).Scope(), p)
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, newList(items, next))
}

type competencyInput struct {
	Name        string   `json:"name"`
	Weight      *float64 `json:"weight"`
	Description string   `json:"description"`
}

type positionInput struct {
	Title        string            `json:"title"`
	Description  string            `json:"description"`
	Competencies []competencyInput `json:"competencies"`
}

const maxNameLen = 200

func checkText(field, v string, min, max int) error {
	if !storable(v) {
		return session.Errorf(session.EINVALID, "%s must be valid UTF-8 without NUL characters", field)
	}
	n := len([]rune(strings.TrimSpace(v)))
	if n < min || len([]rune(v)) > max {
		if min > 0 && n == 0 {
			return session.Errorf(session.EINVALID, "%s is required", field)
		}
		return session.Errorf(session.EINVALID, "%s must be %d to %d characters", field, min, max)
	}
	return nil
}

// handlePositionCreate handles "POST /v1/positions".
func (s *Server) handlePositionCreate(c echo.Context) error {
	var in positionInput
	if err := decode(c, &in); err != nil {
		return err
	}
	if err := checkText("title", in.Title, 1, maxNameLen); err != nil {
		return err
	}
	if err := checkText("description", in.Description, 0, 10000); err != nil {
		return err
	}
	p := session.PositionRecord{Title: strings.TrimSpace(in.Title), Description: in.Description}
	var err error
	if p.Competencies, err = competencies(in.Competencies); err != nil {
		return err
	}
	out, err := s.catalog.CreatePosition(c.Request().Context(), principal(c).Scope(), p)
	if err != nil {
		return err
	}
	return c.JSON(http.StatusCreated, out)
}

// handlePositionGet handles "GET /v1/positions/{id}".
func (s *Server) handlePositionGet(c echo.Context) error {
	id, err := pathID(c, "id")
	if err != nil {
		return err
	}
	p, err := s.catalog.Position(c.Request().Context(), principal(c).Scope(), id)
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, p)
}

type candidateInput struct {
	FullName   string            `json:"full_name"`
	Email      string            `json:"email"`
	ExternalID *string           `json:"external_id"`
	Metadata   map[string]string `json:"metadata"`
}

// checkEmail returns the trimmed address, or why it is not one.
func checkEmail(v string) (string, error) {
	email := strings.TrimSpace(v)
	at := strings.LastIndex(email, "@")
	if at < 1 || at == len(email)-1 || len(email) > 320 || strings.ContainsAny(email, " \t\r\n") || !storable(email) {
		return "", session.Errorf(session.EINVALID, "email must be an email address")
	}
	return email, nil
}

// handleCandidateCreate handles "POST /v1/candidates".
func (s *Server) handleCandidateCreate(c echo.Context) error {
	var in candidateInput
	if err := decode(c, &in); err != nil {
		return err
	}
	if err := checkText("full_name", in.FullName, 1, maxNameLen); err != nil {
		return err
	}
	email, err := checkEmail(in.Email)
	if err != nil {
		return err
	}
	if in.ExternalID != nil {
		if err := checkExternalID(*in.ExternalID); err != nil {
			return err
		}
	}
	if err := checkMetadata(in.Metadata); err != nil {
		return err
	}
	out, err := s.catalog.CreateCandidate(c.Request().Context(), principal(c).Scope(),
		session.Candidate{FullName: strings.TrimSpace(in.FullName), Email: email, ExternalID: in.ExternalID, Metadata: in.Metadata})
	if err != nil {
		return err
	}
	return c.JSON(http.StatusCreated, out)
}

// handleCandidateGet handles "GET /v1/candidates/{id}".
func (s *Server) handleCandidateGet(c echo.Context) error {
	id, err := pathID(c, "id")
	if err != nil {
		return err
	}
	out, err := s.catalog.Candidate(c.Request().Context(), principal(c).Scope(), id)
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, out)
}
