// Package controlapi is the controller's HTTP API on echo: the public
// routes frontends call (positions, candidates, interviews and their
// lifecycle), the internal routes session VMs report to, health and
// metrics. It maps domain errors to the contract's error JSON. It holds no
// SQL and makes no provider calls: it declares the interfaces it needs.
package controlapi

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/google/uuid"
	"github.com/labstack/echo-contrib/echoprometheus"
	"github.com/labstack/echo/v4"
	"github.com/labstack/echo/v4/middleware"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/interviewvm/controlplane/pkg/session"
)

// Catalog stores what recruiters create.
type Catalog interface {
	CreatePosition(ctx context.Context, scope session.Scope, p session.PositionRecord) (session.PositionRecord, error)
	Position(ctx context.Context, scope session.Scope, id string) (session.PositionRecord, error)
	CreateCandidate(ctx context.Context, scope session.Scope, c session.Candidate) (session.Candidate, error)
	Candidate(ctx context.Context, scope session.Scope, id string) (session.Candidate, error)
	CreateInterview(ctx context.Context, scope session.Scope, iv session.Interview) (session.Interview, error)
	Interview(ctx context.Context, scope session.Scope, id string) (session.Interview, error)
	Events(ctx context.Context, scope session.Scope, id string) ([]session.Event, error)
	ListPositions(ctx context.Context, scope session.Scope, p session.Page) ([]session.PositionRecord, string, error)
	ListCandidates(ctx context.Context, scope session.Scope, p session.Page) ([]session.Candidate, string, error)
	ListInterviews(ctx context.Context, scope session.Scope, f session.InterviewFilter, p session.Page) ([]session.Interview, string, error)
	Transcript(ctx context.Context, scope session.Scope, id string, afterSeq int64, limit int) ([]session.Segment, session.Interview, error)
	APIKeyStore
	IdempotencyStore

	PatchPosition(ctx context.Context, scope session.Scope, id string, patch session.PositionPatch) (session.PositionRecord, error)
	DeletePosition(ctx context.Context, scope session.Scope, id string) error
	PatchCandidate(ctx context.Context, scope session.Scope, id string, patch session.CandidatePatch) (session.Candidate, error)
	DeleteCandidate(ctx context.Context, scope session.Scope, id string) error
	CandidateInterviews(ctx context.Context, scope session.Scope, candidateID string) ([]session.Interview, error)
	PatchInterview(ctx context.Context, scope session.Scope, id string, patch session.InterviewPatch) (session.Interview, error)
	DeleteInterview(ctx context.Context, scope session.Scope, id string) error
}

// APIKeyStore keeps tenant API keys by the hash of their secret.
type APIKeyStore interface {
	CreateAPIKey(ctx context.Context, scope session.Scope, k session.APIKey, keyHash []byte) (session.APIKey, error)
	ListAPIKeys(ctx context.Context, scope session.Scope, p session.Page) ([]session.APIKey, string, error)
	DeleteAPIKey(ctx context.Context, scope session.Scope, id string) error
	// APIKeyByHash finds a key of any tenant by the hash of its secret
	// (session.ENOTFOUND: none) and records its use.
	APIKeyByHash(ctx context.Context, keyHash []byte) (session.APIKey, error)
}

// IdempotencyStore keeps the answers of creating requests by their
// Idempotency-Key, per tenant, across replicas and restarts.
type IdempotencyStore interface {
	ClaimIdempotencyKey(ctx context.Context, scope session.Scope, r session.IdempotencyRequest) (session.IdempotencyRecord, error)
	// subjects are the ids the answer names ("id", "candidate_id").
	CompleteIdempotencyKey(ctx context.Context, scope session.Scope, keyHash []byte, claim string, status int, contentType string, response []byte, subjects []string) error
	ReleaseIdempotencyKey(ctx context.Context, scope session.Scope, keyHash []byte, claim string) error
}

// Lifecycle runs interviews (provision.Service).
type Lifecycle interface {
	Start(ctx context.Context, scope session.Scope, id string, wait time.Duration) (session.Interview, error)
	End(ctx context.Context, scope session.Scope, id string) (session.Interview, error)
	Cancel(ctx context.Context, scope session.Scope, id string) (session.Interview, error)
	// Retire cancels a live interview and destroys its machine before it
	// is erased.
	Retire(ctx context.Context, scope session.Scope, id string) error
	Connected(ctx context.Context, scope session.Scope, id string) error
	Transcript(ctx context.Context, id, token string, batch session.TranscriptBatch) (int64, error)
	VMConfig(ctx context.Context, id, token string) (session.VMConfig, error)
	Ready(ctx context.Context, id, token string, req session.ReadyRequest) error
	Heartbeat(ctx context.Context, id, token string, hb session.Heartbeat) (session.HeartbeatAnswer, error)
	Ended(ctx context.Context, id, token string, req session.Ended) error
}

// Health reports on the database.
type Health interface {
	Ping(ctx context.Context) error
	SchemaCurrent(ctx context.Context) (bool, error)
}

// Config holds the API's settings.
type Config struct {
	Auth AuthConfig
	// MaxDuration is the default and the upper bound of max_duration_s.
	MaxDuration time.Duration
	// Regions are the regions an interview may ask for; the first is the
	// default (none: interviews have no region).
	Regions []string
	// DefaultStartWait is how long a start waits when ?wait= is absent.
	DefaultStartWait time.Duration
	// StreamKeepAlive is the idle period after which a transcript stream
	// sends a keep-alive comment (default 15 s).
	StreamKeepAlive time.Duration
	// RateLimit is each user's sustained requests per second (0: 20) and
	// RateBurst its burst (0: 40); users are keyed on the JWT subject.
	RateLimit float64
	RateBurst int
	// BehindFlyProxy trusts Fly's Fly-Client-IP header for the client
	// address; otherwise the socket address is used.
	BehindFlyProxy bool
	// FlyReplayApp, when set, answers session routes of Fly machines with
	// a fly-replay to that app's machine instead of proxying.
	FlyReplayApp string
	// VMTransport carries proxied calls to VMs (default: a dedicated
	// http.Transport).
	VMTransport http.RoundTripper
	// VMTimeout bounds one proxied call to a VM (default 20 s); past it the
	// caller gets 504.
	VMTimeout time.Duration
	// Demo, when set, is served at /demo and /demo/* (the demo page).
	Demo http.Handler
	// CORSOrigins are the browser origins (scheme://host[:port], or "*"
	// for any) allowed to call the API from other sites; empty: CORS off.
	CORSOrigins []string
	// Insights serves the analyses of completed interviews; nil: none
	// (reads answer 404, re-runs 409).
	Insights InsightsService
	// SeparateMetrics serves /metrics only through MetricsHandler (its own
	// listener, METRICS_ADDR); Handler then answers it 404.
	SeparateMetrics bool
	// SeparateInternal serves /internal/v1/* only through InternalHandler
	// (its own listener, INTERNAL_ADDR); Handler then answers them 404.
	SeparateInternal bool
	// Webhooks manages webhook endpoints and deliveries; nil: the
	// webhook routes answer 503.
	Webhooks WebhookService
}

// maxBody bounds every request body.
const maxBody = "1M"

// Server is the controller's HTTP API.
type Server struct {
	cfg       Config
	auth      *Authenticator
	catalog   Catalog
	lifecycle Lifecycle
	health    Health
	feed      Feed
	logger    *slog.Logger
	metrics   *metrics
	echo      *echo.Echo

	vmTransport http.RoundTripper
	// bodyBufs are the buffers heartbeat bodies are read into.
	bodyBufs bodyBuffers
	// closing is closed by CloseStreams: long-lived streams end.
	closing   chan struct{}
	closeOnce sync.Once
	stop      context.CancelFunc // ends background work (JWKS refresh)
}

// Close ends live streams and background work.
func (s *Server) Close() {
	s.CloseStreams()
	s.stop()
}

// CloseStreams ends every live transcript stream, so a graceful shutdown
// does not wait for them; clients reconnect and resume.
func (s *Server) CloseStreams() { s.closeOnce.Do(func() { close(s.closing) }) }

// New builds the API. reg receives the HTTP metrics; gatherer is served at
// /metrics.
func New(cfg Config, catalog Catalog, lifecycle Lifecycle, health Health, feed Feed, logger *slog.Logger,
	reg prometheus.Registerer, gatherer prometheus.Gatherer) (*Server, error) {
	ctx, cancel := context.WithCancel(context.Background())
	if cfg.Auth.Logger == nil {
		cfg.Auth.Logger = logger
	}
	auth, err := NewAuthenticator(ctx, cfg.Auth)
	if err != nil {
		cancel()
		return nil, err
	}
	if cfg.MaxDuration <= 0 {
		cfg.MaxDuration = 45 * time.Minute
	}
	if cfg.DefaultStartWait <= 0 {
		cfg.DefaultStartWait = 20 * time.Second
	}
	if cfg.StreamKeepAlive <= 0 {
		cfg.StreamKeepAlive = 15 * time.Second
	}
	if cfg.RateLimit <= 0 {
		cfg.RateLimit = 20
	}
	if cfg.RateBurst <= 0 {
		cfg.RateBurst = 40
	}
	if cfg.VMTimeout <= 0 {
		cfg.VMTimeout = 20 * time.Second
	}
	vmTransport := cfg.VMTransport
	if vmTransport == nil {
		vmTransport = &http.Transport{
			DialContext:         (&net.Dialer{Timeout: 5 * time.Second}).DialContext,
			MaxIdleConnsPerHost: 4,
			IdleConnTimeout:     30 * time.Second,
		}
	}
	cors, err := newCORSPolicy(cfg.CORSOrigins)
	if err != nil {
		cancel()
		return nil, err
	}
	s := &Server{cfg: cfg, auth: auth, catalog: catalog, lifecycle: lifecycle, health: health, feed: feed,
		logger: logger, metrics: newMetrics(reg), vmTransport: vmTransport, closing: make(chan struct{}), stop: cancel}
	e := echo.New()
	e.HideBanner, e.HidePort = true, true
	// Never trust client-supplied forwarding headers; behind Fly's proxy,
	// Fly-Client-IP is set by the proxy itself.
	e.IPExtractor = echo.ExtractIPDirect()
	if cfg.BehindFlyProxy {
		e.IPExtractor = func(r *http.Request) string {
			if ip := net.ParseIP(strings.TrimSpace(r.Header.Get("Fly-Client-IP"))); ip != nil {
				return ip.String()
			}
			return echo.ExtractIPDirect()(r)
		}
	}
	e.HTTPErrorHandler = s.handleError
	e.Pre(takeAccessToken)
	e.Use(middleware.RequestID())
	e.Use(s.accessLog)
	e.Use(s.onListener)
	if cors != nil {
		e.Use(cors.middleware)
	}
	e.Use(middleware.BodyLimit(maxBody))
	e.Use(echoprometheus.NewMiddlewareWithConfig(echoprometheus.MiddlewareConfig{
		Registerer: reg, Subsystem: "http",
		Skipper: func(c echo.Context) bool { return c.Path() == "/metrics" },
	}))
	e.GET("/metrics", echo.WrapHandler(promhttp.HandlerFor(gatherer, promhttp.HandlerOpts{})))
	s.registerRoutes(e)
	if cfg.Demo != nil {
		e.Match([]string{http.MethodGet, http.MethodHead}, "/demo", echo.WrapHandler(cfg.Demo))
		e.Match([]string{http.MethodGet, http.MethodHead}, "/demo/*", echo.WrapHandler(cfg.Demo))
	}
	s.echo = e
	return s, nil
}

// Handler returns the API as an http.Handler: the public listener's, which
// serves every route but those Config moves to InternalHandler and
// MetricsHandler.
func (s *Server) Handler() http.Handler { return s.echo }

// handleHealthz answers "GET /healthz": the process is up.
func (s *Server) handleHealthz(c echo.Context) error {
	return c.JSON(http.StatusOK, map[string]string{"status": "ok"})
}

// handleReadyz answers "GET /readyz": the database answers and its schema
// is current.
func (s *Server) handleReadyz(c echo.Context) error {
	ctx, cancel := context.WithTimeout(c.Request().Context(), 2*time.Second)
	defer cancel()
	if err := s.health.Ping(ctx); err != nil {
		s.logger.Warn("readiness: database unreachable", "error", err)
		return session.Errorf(session.EUNAVAILABLE, "database unreachable")
	}
	ok, err := s.health.SchemaCurrent(ctx)
	if err != nil {
		s.logger.Warn("readiness: schema check failed", "error", err)
		return session.Errorf(session.EUNAVAILABLE, "schema check failed")
	}
	if !ok {
		return session.Errorf(session.EUNAVAILABLE, "database schema is behind: run `controller migrate`")
	}
	return c.JSON(http.StatusOK, map[string]string{"status": "ready"})
}

// heartbeatRoute is the heartbeat's route as echo names it.
const heartbeatRoute = "/internal/v1/sessions/:id/heartbeat"

// accessLog writes one line per request with its request id (at debug for
// probes, scrapes and accepted heartbeats).
func (s *Server) accessLog(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) error {
		start := time.Now()
		err := next(c)
		if err != nil {
			c.Error(err)
		}
		req := c.Request()
		level := slog.LevelInfo
		switch c.Path() {
		case "/healthz", "/readyz", "/metrics":
			level = slog.LevelDebug
		case heartbeatRoute:
			// Every VM sends one every HEARTBEAT_INTERVAL: thousands a
			// second at scale. A refused one is still logged.
			if c.Response().Status < http.StatusBadRequest {
				level = slog.LevelDebug
			}
		}
		if !s.logger.Enabled(req.Context(), level) {
			return nil
		}
		s.logger.Log(req.Context(), level, "http request",
			"request_id", c.Response().Header().Get(echo.HeaderXRequestID),
			"method", req.Method, "route", c.Path(), "status", c.Response().Status,
			"duration_ms", time.Since(start).Milliseconds(), "remote_ip", c.RealIP())
		return nil
	}
}

var statusOf = map[string]int{
	session.EINVALID:             http.StatusBadRequest,
	session.EUNAUTHENTICATED:     http.StatusUnauthorized,
	session.EFORBIDDEN:           http.StatusForbidden,
	session.ENOTFOUND:            http.StatusNotFound,
	session.ECONFLICT:            http.StatusConflict,
	session.ETOOLARGE:            http.StatusRequestEntityTooLarge,
	session.ERATELIMITED:         http.StatusTooManyRequests,
	session.EUNAVAILABLE:         http.StatusServiceUnavailable,
	session.EQUOTA:               http.StatusTooManyRequests,
	session.EBADGATEWAY:          http.StatusBadGateway,
	session.EGATEWAYTIMEOUT:      http.StatusGatewayTimeout,
	session.EINTERNAL:            http.StatusInternalServerError,
	session.EIDEMPOTENCYREUSED:   http.StatusUnprocessableEntity,
	session.EIDEMPOTENCYINFLIGHT: http.StatusConflict,
}

var codeOfStatus = map[int]string{
	http.StatusBadRequest:            session.EINVALID,
	http.StatusUnauthorized:          session.EUNAUTHENTICATED,
	http.StatusForbidden:             session.EFORBIDDEN,
	http.StatusNotFound:              session.ENOTFOUND,
	http.StatusMethodNotAllowed:      "method_not_allowed",
	http.StatusRequestEntityTooLarge: session.ETOOLARGE,
	http.StatusUnsupportedMediaType:  "unsupported_media_type",
	http.StatusTooManyRequests:       session.ERATELIMITED,
	http.StatusServiceUnavailable:    session.EUNAVAILABLE,
}

type errorBody struct {
	Error struct {
		Code    string `json:"code"`
		Message string `json:"message"`
	} `json:"error"`
}

// handleError writes every error as the contract's error JSON. Internal
// errors are logged with the request id; clients see only "internal error".
func (s *Server) handleError(err error, c echo.Context) {
	if c.Response().Committed {
		return
	}
	var body errorBody
	status := http.StatusInternalServerError
	var he *echo.HTTPError
	var de *session.Error
	switch {
	case errors.As(err, &de):
		body.Error.Code, body.Error.Message = de.Code, de.Message
		if st, ok := statusOf[de.Code]; ok {
			status = st
		}
	case errors.As(err, &he):
		status = he.Code
		body.Error.Code = codeOfStatus[status]
		if body.Error.Code == "" {
			body.Error.Code = strings.ToLower(strings.ReplaceAll(http.StatusText(status), " ", "_"))
		}
		body.Error.Message = strings.ToLower(fmt.Sprint(he.Message))
	default:
		body.Error.Code, body.Error.Message = session.EINTERNAL, "internal error"
	}
	if status == http.StatusInternalServerError {
		s.logger.Error("request failed", "request_id", c.Response().Header().Get(echo.HeaderXRequestID),
			"route", c.Path(), "error", err)
	}
	if c.Request().Method == http.MethodHead {
		_ = c.NoContent(status)
		return
	}
	_ = c.JSON(status, body)
}

// decode reads a JSON body strictly: unknown fields, wrong types, trailing
// data, an empty body, and text PostgreSQL cannot store (NUL, invalid
// UTF-8, unpaired surrogates) are all invalid.
func decode(c echo.Context, v any) error { return decodeBody(c, v, true) }

// decodeInternal is decode for the internal API, whose text comes from the
// session VMs and is checked where it is stored.
func decodeInternal(c echo.Context, v any) error { return decodeBody(c, v, false) }

func decodeBody(c echo.Context, v any, checkText bool) error {
	if err := jsonContentType(c); err != nil {
		return err
	}
	var body io.Reader = c.Request().Body
	if checkText {
		raw, err := io.ReadAll(c.Request().Body)
		var tooLarge *http.MaxBytesError
		if errors.As(err, &tooLarge) {
			return session.Errorf(session.ETOOLARGE, "request body too large")
		}
		if err != nil {
			return session.Errorf(session.EINVALID, "read request body: %v", err)
		}
		if err := checkStorableJSON(raw); err != nil {
			return err
		}
		body = bytes.NewReader(raw)
	}
	return decodeJSON(body, v)
}

// decodeJSON decodes one JSON value from body into v strictly, with the
// contract's errors.
func decodeJSON(body io.Reader, v any) error {
	dec := json.NewDecoder(body)
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		var tooLarge *http.MaxBytesError
		var typeErr *json.UnmarshalTypeError
		var syntaxErr *json.SyntaxError
		switch {
		case errors.As(err, &tooLarge):
			return session.Errorf(session.ETOOLARGE, "request body too large")
		case errors.Is(err, io.EOF):
			return session.Errorf(session.EINVALID, "request body is empty")
		case errors.As(err, &typeErr):
			return session.Errorf(session.EINVALID, "field %q must be %s", typeErr.Field, typeErr.Type)
		case errors.As(err, &syntaxErr), errors.Is(err, io.ErrUnexpectedEOF):
			return session.Errorf(session.EINVALID, "malformed JSON")
		case strings.HasPrefix(err.Error(), "json: unknown field"):
			return session.Errorf(session.EINVALID, "%s", strings.TrimPrefix(err.Error(), "json: "))
		}
		return session.Errorf(session.EINVALID, "invalid JSON body")
	}
	if dec.More() {
		return session.Errorf(session.EINVALID, "trailing data after the JSON body")
	}
	return nil
}

// jsonContentType refuses a request body that says it is not JSON.
func jsonContentType(c echo.Context) error {
	ct := c.Request().Header.Get(echo.HeaderContentType)
	if ct != "" && !strings.HasPrefix(strings.ToLower(ct), echo.MIMEApplicationJSON) {
		return &echo.HTTPError{Code: http.StatusUnsupportedMediaType, Message: "content type must be application/json"}
	}
	return nil
}

// pathID returns the path parameter name as a canonical UUID.
func pathID(c echo.Context, name string) (string, error) {
	id, err := uuid.Parse(c.Param(name))
	if err != nil || len(c.Param(name)) != 36 {
		return "", session.Errorf(session.EINVALID, "%s must be a UUID", name)
	}
	return id.String(), nil
}
