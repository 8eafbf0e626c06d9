package controlapi

import (
	"context"
	"net/http"

	"github.com/labstack/echo/v4"

	"github.com/interviewvm/controlplane/pkg/controlapi/apigen"
	"github.com/interviewvm/controlplane/pkg/session"
)

// InsightsService reads and re-runs the analyses of completed interviews
// (the controller's insights wiring over the store and the job queue).
type InsightsService interface {
	// Insights returns the analysis (session.ENOTFOUND: the interview is
	// not in scope or has none).
	Insights(ctx context.Context, scope session.Scope, id string) (session.Insights, error)
	// RerunInsights queues a new analysis of a completed interview
	// (session.ECONFLICT for any other status).
	RerunInsights(ctx context.Context, scope session.Scope, id string) error
}

// GetInsights handles "GET /v1/interviews/{id}/insights".
func (s *Server) GetInsights(c echo.Context, _ apigen.ID) error {
	id, err := pathID(c, "id")
	if err != nil {
		return err
	}
	if s.cfg.Insights == nil {
		return session.Errorf(session.ENOTFOUND, "interview analysis is not configured")
	}
	in, err := s.cfg.Insights.Insights(c.Request().Context(), principal(c).Scope(), id)
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, in)
}

// RerunInsights handles "POST /v1/interviews/{id}/insights".
func (s *Server) RerunInsights(c echo.Context, _ apigen.ID) error {
	id, err := pathID(c, "id")
	if err != nil {
		return err
	}
	if s.cfg.Insights == nil {
		return session.Errorf(session.ECONFLICT, "interview analysis is not configured")
	}
	ctx, scope := c.Request().Context(), principal(c).Scope()
	if err := s.cfg.Insights.RerunInsights(ctx, scope, id); err != nil {
		return err
	}
	in, err := s.cfg.Insights.Insights(ctx, scope, id)
	if err != nil {
		return err
	}
	return c.JSON(http.StatusAccepted, in)
}
