package controlapi

import (
	"net/http"
	"strconv"
	"time"

	"github.com/google/uuid"
	"github.com/labstack/echo/v4"

	"github.com/interviewvm/controlplane/pkg/session"
)

// listAnswer is the shape of every list.
type listAnswer[T any] struct {
	Items      []T     `json:"items"`
	NextCursor *string `json:"next_cursor"`
}

func newList[T any](items []T, next string) listAnswer[T] {
	if items == nil {
		items = []T{}
	}
	a := listAnswer[T]{Items: items}
	if next != "" {
		a.NextCursor = &next
	}
	return a
}

// page reads ?limit= (1..100, default 50) and ?cursor=.
func page(c echo.Context) (session.Page, error) {
	p := session.Page{Limit: 50, Cursor: c.QueryParam("cursor")}
	if v := c.QueryParam("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > 100 {
			return p, session.Errorf(session.EINVALID, "limit must be an integer from 1 to 100")
		}
		p.Limit = n
	}
	if len(p.Cursor) > 200 {
		return p, session.Errorf(session.EINVALID, "cursor is not one this API issued")
	}
	return p, nil
}

// handleInterviewList handles "GET /v1/interviews?status=&limit=&cursor=".
func (s *Server) handleInterviewList(c echo.Context) error {
	p, err := page(c)
	if err != nil {
		return err
	}
	f := session.InterviewFilter{Status: session.State(c.QueryParam("status")), ExternalID: c.QueryParam("external_id")}
	if f.Status != "" && !f.Status.Valid() {
		return session.Errorf(session.EINVALID, "status must be one of %v", session.States)
	}
	if _, ok := c.QueryParams()["external_id"]; ok {
		if err := checkExternalID(f.ExternalID); err != nil {
			return err
		}
	}
	items, next, err := s.catalog.ListInterviews(c.Request().Context(), principal(c).Scope(), f, p)
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, newList(items, next))
}

type interviewInput struct {
	CandidateID  string            `json:"candidate_id"`
	PositionID   string            `json:"position_id"`
	CompanyID    *string           `json:"company_id"`
	Architecture string            `json:"architecture"`
	MaxDurationS *int              `json:"max_duration_s"`
	ExternalID   *string           `json:"external_id"`
	Metadata     map[string]string `json:"metadata"`
	ScheduledAt  *string           `json:"scheduled_at"`
	Region       *string           `json:"region"`
}

// parseScheduledAt reads an RFC 3339 scheduled_at.
func parseScheduledAt(v string) (time.Time, error) {
	t, err := time.Parse(time.RFC3339, v)
	if err != nil {
		return time.Time{}, session.Errorf(session.EINVALID, "scheduled_at must be an RFC 3339 date-time, like 2026-01-02T15:04:05Z")
	}
	return t.UTC(), nil
}

// checkRegion accepts one of the configured regions.
func (s *Server) checkRegion(v string) error {
	for _, r := range s.cfg.Regions {
		if v == r {
			return nil
		}
	}
	return session.Errorf(session.EINVALID, "region must be one of %v", s.cfg.Regions)
}

// defaultRegion is the region of an interview created without one.
func (s *Server) defaultRegion() string {
	if len(s.cfg.Regions) == 0 {
		return ""
	}
	return s.cfg.Regions[0]
}

func bodyUUID(field, v string) (string, error) {
	id, err := uuid.Parse(v)
	if err != nil || len(v) != 36 {
		return "", session.Errorf(session.EINVALID, "%s must be a UUID", field)
	}
	return id.String(), nil
}

// handleInterviewCreate handles "POST /v1/interviews".
func (s *Server) handleInterviewCreate(c echo.Context) error {
	var in interviewInput
	if err := decode(c, &in); err != nil {
		return err
	}
	iv := session.Interview{Architecture: in.Architecture, MaxDurationS: int(s.cfg.MaxDuration / time.Second)}
	var err error
	if iv.CandidateID, err = bodyUUID("candidate_id", in.CandidateID); err != nil {
		return err
	}
	if iv.PositionID, err = bodyUUID("position_id", in.PositionID); err != nil {
		return err
	}
	if in.CompanyID != nil {
		id, err := bodyUUID("company_id", *in.CompanyID)
		if err != nil {
			return err
		}
		iv.CompanyID = &id
	}
	if iv.Architecture == "" {
		iv.Architecture = session.ArchitectureHybrid
	}
	if iv.Architecture != session.ArchitectureHybrid {
		return session.Errorf(session.EINVALID, "architecture must be one of %v", session.Architectures)
	}
	if in.MaxDurationS != nil {
		if err := s.checkMaxDuration(*in.MaxDurationS); err != nil {
			return err
		}
		iv.MaxDurationS = *in.MaxDurationS
	}
	if in.ExternalID != nil {
		if err := checkExternalID(*in.ExternalID); err != nil {
			return err
		}
		iv.ExternalID = in.ExternalID
	}
	if err := checkMetadata(in.Metadata); err != nil {
		return err
	}
	iv.Metadata = in.Metadata
	if in.ScheduledAt != nil {
		t, err := parseScheduledAt(*in.ScheduledAt)
		if err != nil {
			return err
		}
		iv.ScheduledAt = &t
	}
	iv.Region = s.defaultRegion()
	if in.Region != nil {
		if err := s.checkRegion(*in.Region); err != nil {
			return err
		}
		iv.Region = *in.Region
	}
	out, err := s.catalog.CreateInterview(c.Request().Context(), principal(c).Scope(), iv)
	if err != nil {
		return err
	}
	return c.JSON(http.StatusCreated, out)
}

// handleInterviewGet handles "GET /v1/interviews/{id}".
func (s *Server) handleInterviewGet(c echo.Context) error {
	id, err := pathID(c, "id")
	if err != nil {
		return err
	}
	iv, err := s.catalog.Interview(c.Request().Context(), principal(c).Scope(), id)
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, iv)
}

// maxStartWait is the longest a start request waits for the VM.
const maxStartWait = 60 * time.Second

type connectInfo struct {
	SDPURL      string    `json:"sdp_url"`
	TokenURL    string    `json:"token_url"`
	AccessToken string    `json:"access_token"`
	ExpiresAt   time.Time `json:"expires_at"`
}

type startAnswer struct {
	Interview session.Interview `json:"interview"`
	Connect   *connectInfo      `json:"connect,omitempty"`
}

// handleInterviewStart handles "POST /v1/interviews/{id}/start?wait=<s>".
// It is idempotent: repeated and concurrent starts share one machine.
func (s *Server) handleInterviewStart(c echo.Context) error {
	id, err := pathID(c, "id")
	if err != nil {
		return err
	}
	wait := s.cfg.DefaultStartWait
	if w := c.QueryParam("wait"); w != "" {
		secs, err := strconv.ParseFloat(w, 64)
		if err != nil || secs < 0 || secs > maxStartWait.Seconds() {
			return session.Errorf(session.EINVALID, "wait must be a number of seconds from 0 to %d", int(maxStartWait.Seconds()))
		}
		wait = time.Duration(secs * float64(time.Second))
	}
	if k := c.Request().Header.Get("Idempotency-Key"); len(k) > 255 {
		return session.Errorf(session.EINVALID, "Idempotency-Key must be at most 255 characters")
	}
	p := principal(c)
	iv, err := s.lifecycle.Start(c.Request().Context(), p.Scope(), id, wait)
	if err != nil {
		return err
	}
	if !iv.Connectable() {
		if iv.Status.Terminal() {
			return session.Errorf(session.ECONFLICT, "interview is %s", iv.Status)
		}
		return c.JSON(http.StatusAccepted, startAnswer{Interview: iv})
	}
	tok, exp, err := s.auth.MintSession(iv.TenantID, iv.ID, iv.MaxDuration()+5*time.Minute)
	if err != nil {
		return err
	}
	base := c.Scheme() + "://" + c.Request().Host + "/v1/interviews/" + iv.ID + "/session/"
	return c.JSON(http.StatusOK, startAnswer{Interview: iv, Connect: &connectInfo{
		SDPURL: base + "sdp", TokenURL: base + "token", AccessToken: tok, ExpiresAt: exp,
	}})
}

// handleInterviewEnd handles "POST /v1/interviews/{id}/end".
func (s *Server) handleInterviewEnd(c echo.Context) error {
	id, err := pathID(c, "id")
	if err != nil {
		return err
	}
	iv, err := s.lifecycle.End(c.Request().Context(), principal(c).Scope(), id)
	if err != nil {
		return err
	}
	return c.JSON(http.StatusAccepted, iv)
}

// handleInterviewCancel handles "POST /v1/interviews/{id}/cancel".
func (s *Server) handleInterviewCancel(c echo.Context) error {
	id, err := pathID(c, "id")
	if err != nil {
		return err
	}
	iv, err := s.lifecycle.Cancel(c.Request().Context(), principal(c).Scope(), id)
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, iv)
}

// handleInterviewEvents handles "GET /v1/interviews/{id}/events": the
// timeline and the time spent in each state.
func (s *Server) handleInterviewEvents(c echo.Context) error {
	id, err := pathID(c, "id")
	if err != nil {
		return err
	}
	ctx, scope := c.Request().Context(), principal(c).Scope()
	iv, err := s.catalog.Interview(ctx, scope, id)
	if err != nil {
		return err
	}
	events, err := s.catalog.Events(ctx, scope, id)
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, map[string]any{"items": events, "phases": session.Phases(iv, events, time.Now())})
}
