package controlapi

import (
	"context"
	"net/http"
	"strings"

	"github.com/labstack/echo/v4"
)

// listener is the listener a request arrived on: the public one
// (Handler), the internal one (InternalHandler) or the metrics one
// (MetricsHandler).
type listener int

const (
	listenerPublic listener = iota
	listenerInternal
	listenerMetrics
)

type listenerKey struct{}

// InternalHandler serves the internal listener (INTERNAL_ADDR): the routes
// session VMs report to, /internal/v1/*, and /healthz; every other route
// answers 404. Use it with Config.SeparateInternal.
func (s *Server) InternalHandler() http.Handler { return s.on(listenerInternal) }

// MetricsHandler serves the metrics listener (METRICS_ADDR): /metrics and
// /healthz; every other route answers 404. Use it with
// Config.SeparateMetrics.
func (s *Server) MetricsHandler() http.Handler { return s.on(listenerMetrics) }

// on marks each request with the listener it arrived on, for onListener.
func (s *Server) on(l listener) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.echo.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), listenerKey{}, l)))
	})
}

// onListener answers a route its listener does not serve with 404 (the
// contract's error JSON), as if the route did not exist. It runs after
// routing, so it judges the matched route, not the raw request path.
func (s *Server) onListener(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) error {
		l, _ := c.Request().Context().Value(listenerKey{}).(listener)
		if !s.serves(l, c.Path()) {
			return echo.ErrNotFound
		}
		return next(c)
	}
}

// serves reports whether listener l serves route (an echo route pattern).
func (s *Server) serves(l listener, route string) bool {
	metrics := route == "/metrics"
	internal := strings.HasPrefix(route, "/internal/")
	switch l {
	case listenerInternal:
		return internal || route == "/healthz"
	case listenerMetrics:
		return metrics || route == "/healthz"
	}
	return (!metrics || !s.cfg.SeparateMetrics) && (!internal || !s.cfg.SeparateInternal)
}
