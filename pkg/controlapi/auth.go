package controlapi

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strings"
	"time"

	"github.com/MicahParks/keyfunc/v3"
	"github.com/golang-jwt/jwt/v5"
	"github.com/google/uuid"
	"github.com/labstack/echo/v4"
	"golang.org/x/time/rate"

	"github.com/interviewvm/controlplane/pkg/session"
)

// Roles carried in the JWT's user_role claim.
const (
	RoleAdmin     = "admin"
	RoleRecruiter = "recruiter"
	RoleViewer    = "viewer"
)

// sessionAudience is the audience of the interview-scoped access tokens the
// start answer hands a candidate's browser; tenant routes refuse it.
const sessionAudience = "interview-session"

// Principal is who a request acts as.
type Principal struct {
	Subject  string
	TenantID string
	Role     string
	// InterviewID is set for interview-scoped access tokens only.
	InterviewID string
}

// Scope returns the principal's tenant scope.
func (p Principal) Scope() session.Scope { return session.TenantScope(p.TenantID) }

type claims struct {
	jwt.RegisteredClaims
	TenantID    string `json:"tenant_id,omitempty"`
	UserRole    string `json:"user_role,omitempty"`
	InterviewID string `json:"interview_id,omitempty"`
	AppMetadata struct {
		TenantID string `json:"tenant_id,omitempty"`
	} `json:"app_metadata"`
}

// AuthConfig configures tenant authentication.
type AuthConfig struct {
	// Secret verifies HS256 tokens (Supabase's legacy shared secret); empty
	// disables HS256.
	Secret string
	// JWKSURL serves the public keys of ES256/RS256 tokens; empty disables
	// them. Keys are cached, refreshed hourly, and an unknown kid triggers a
	// refresh (at most one every 30 s).
	JWKSURL string
	// Audience is the required aud claim (default "authenticated").
	Audience string
	// AccessSecret signs the interview access tokens; default: derived
	// from Secret. Required when Secret is empty.
	AccessSecret string
	// UnknownKIDRefresh is the least time between two refreshes caused by
	// an unknown kid (default 30 s), so forged kids cannot hammer the IdP.
	UnknownKIDRefresh time.Duration
	// HTTPClient fetches the JWKS (default: 5 s timeout).
	HTTPClient *http.Client
	Logger     *slog.Logger
}

// Authenticator verifies Supabase-compatible tenant JWTs and mints and
// verifies the short-lived interview access tokens.
type Authenticator struct {
	secret    []byte
	accessKey []byte
	audience  string
	jwks      keyfunc.Keyfunc
	parser    *jwt.Parser
	access    *jwt.Parser
	now       func() time.Time
}

// NewAuthenticator returns an Authenticator; with a JWKS URL it fetches the
// keys in the background until ctx ends.
func NewAuthenticator(ctx context.Context, cfg AuthConfig) (*Authenticator, error) {
	if cfg.Secret == "" && cfg.JWKSURL == "" {
		return nil, errors.New("configure JWT_SECRET (HS256) and/or JWKS_URL (ES256/RS256)")
	}
	if cfg.Secret != "" && len(cfg.Secret) < 16 {
		return nil, errors.New("JWT secret must be at least 16 bytes")
	}
	if cfg.Audience == "" {
		cfg.Audience = "authenticated"
	}
	a := &Authenticator{secret: []byte(cfg.Secret), audience: cfg.Audience, now: time.Now}
	switch {
	case cfg.AccessSecret != "":
		if len(cfg.AccessSecret) < 16 {
			return nil, errors.New("access token secret must be at least 16 bytes")
		}
		a.accessKey = []byte(cfg.AccessSecret)
	case cfg.Secret != "":
		mac := hmac.New(sha256.New, []byte(cfg.Secret))
		mac.Write([]byte("interview access tokens"))
		a.accessKey = mac.Sum(nil)
	default:
		return nil, errors.New("ACCESS_TOKEN_SECRET is required when JWT_SECRET is not set")
	}
	var algs []string
	if cfg.Secret != "" {
		algs = append(algs, "HS256")
	}
	if cfg.JWKSURL != "" {
		algs = append(algs, "ES256", "RS256")
		client := cfg.HTTPClient
		if client == nil {
			client = &http.Client{Timeout: 5 * time.Second}
		}
		logger := cfg.Logger
		if logger == nil {
			logger = slog.New(slog.DiscardHandler)
		}
		every := cfg.UnknownKIDRefresh
		if every <= 0 {
			every = 30 * time.Second
		}
		noErr := true
		kf, err := keyfunc.NewDefaultOverrideCtx(ctx, []string{cfg.JWKSURL}, keyfunc.Override{
			Client: client, HTTPTimeout: 5 * time.Second, RefreshInterval: time.Hour,
			RefreshUnknownKID: rate.NewLimiter(rate.Every(every), 1), RateLimitWaitMax: time.Second,
			NoErrorReturnFirstHTTPReq: &noErr,
			RefreshErrorHandlerFunc: func(u string) func(context.Context, error) {
				return func(_ context.Context, err error) { logger.Warn("refresh JWKS failed", "url", u, "error", err) }
			},
		})
		if err != nil {
			return nil, fmt.Errorf("load JWKS from %s: %w", cfg.JWKSURL, err)
		}
		a.jwks = kf
	}
	a.parser = jwt.NewParser(jwt.WithValidMethods(algs), jwt.WithExpirationRequired(),
		jwt.WithAudience(cfg.Audience), jwt.WithLeeway(30*time.Second))
	a.access = jwt.NewParser(jwt.WithValidMethods([]string{"HS256"}), jwt.WithExpirationRequired(),
		jwt.WithAudience(sessionAudience), jwt.WithLeeway(5*time.Second))
	return a, nil
}

// key picks the verification key of a tenant token by its algorithm; the
// parser has already refused algorithms outside the allow-list.
func (a *Authenticator) key(t *jwt.Token) (any, error) {
	if t.Method.Alg() == "HS256" {
		return a.secret, nil
	}
	if a.jwks == nil {
		return nil, errors.New("no JWKS configured")
	}
	return a.jwks.Keyfunc(t)
}

func (a *Authenticator) parse(p *jwt.Parser, raw string, key jwt.Keyfunc) (*claims, error) {
	var c claims
	_, err := p.ParseWithClaims(raw, &c, key)
	if err != nil {
		return nil, session.Errorf(session.EUNAUTHENTICATED, "invalid token: %s", jwtReason(err))
	}
	return &c, nil
}

func jwtReason(err error) string {
	switch {
	case errors.Is(err, jwt.ErrTokenExpired):
		return "expired"
	case errors.Is(err, jwt.ErrTokenNotValidYet):
		return "not valid yet"
	case errors.Is(err, jwt.ErrTokenMalformed):
		return "malformed"
	case errors.Is(err, jwt.ErrTokenSignatureInvalid), errors.Is(err, jwt.ErrTokenUnverifiable):
		return "bad signature or algorithm"
	case errors.Is(err, jwt.ErrTokenRequiredClaimMissing):
		return "missing expiry"
	case errors.Is(err, jwt.ErrTokenInvalidAudience):
		return "wrong audience"
	}
	return "rejected"
}

// Tenant authenticates a tenant user's token.
func (a *Authenticator) Tenant(raw string) (Principal, error) {
	c, err := a.parse(a.parser, raw, a.key)
	if err != nil {
		return Principal{}, err
	}
	tenant := c.TenantID
	if tenant == "" {
		tenant = c.AppMetadata.TenantID
	}
	if _, err := uuid.Parse(tenant); err != nil {
		return Principal{}, session.Errorf(session.EUNAUTHENTICATED, "token carries no valid tenant_id")
	}
	role := c.UserRole
	switch role {
	case RoleAdmin, RoleRecruiter, RoleViewer:
	case "":
		role = RoleViewer
	default:
		return Principal{}, session.Errorf(session.EFORBIDDEN, "unknown role %q", role)
	}
	return Principal{Subject: c.Subject, TenantID: strings.ToLower(tenant), Role: role}, nil
}

// Session authenticates an interview-scoped access token.
func (a *Authenticator) Session(raw string) (Principal, error) {
	c, err := a.parse(a.access, raw, func(*jwt.Token) (any, error) { return a.accessKey, nil })
	if err != nil {
		return Principal{}, err
	}
	if c.InterviewID == "" || c.TenantID == "" {
		return Principal{}, session.Errorf(session.EUNAUTHENTICATED, "invalid token: not an interview access token")
	}
	return Principal{Subject: c.Subject, TenantID: c.TenantID, Role: "candidate", InterviewID: c.InterviewID}, nil
}

// MintSession returns an access token for one interview valid for ttl.
func (a *Authenticator) MintSession(tenantID, interviewID string, ttl time.Duration) (string, time.Time, error) {
	exp := a.now().Add(ttl).Truncate(time.Second)
	c := claims{
		RegisteredClaims: jwt.RegisteredClaims{
			Subject: "interview:" + interviewID, Audience: jwt.ClaimStrings{sessionAudience},
			ExpiresAt: jwt.NewNumericDate(exp), IssuedAt: jwt.NewNumericDate(a.now()),
		},
		TenantID: tenantID, InterviewID: interviewID,
	}
	tok, err := jwt.NewWithClaims(jwt.SigningMethodHS256, c).SignedString(a.accessKey)
	if err != nil {
		return "", time.Time{}, fmt.Errorf("sign access token: %w", err)
	}
	return tok, exp, nil
}

func bearer(c echo.Context) (string, error) {
	h := c.Request().Header.Get(echo.HeaderAuthorization)
	if len(h) < 7 || !strings.EqualFold(h[:7], "bearer ") || strings.TrimSpace(h[7:]) == "" {
		return "", session.Errorf(session.EUNAUTHENTICATED, "missing bearer token")
	}
	return strings.TrimSpace(h[7:]), nil
}

const principalKey = "principal"

// requireTenant authenticates tenant users by their JWT and, when
// apiKeys, tenant API keys (ik_…); read-only roles may only read.
func (s *Server) requireTenant(apiKeys bool) echo.MiddlewareFunc {
	return func(next echo.HandlerFunc) echo.HandlerFunc {
		return s.tenantAuth(apiKeys, next)
	}
}

func (s *Server) tenantAuth(apiKeys bool, next echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) error {
		raw, err := bearer(c)
		if err != nil {
			return err
		}
		var p Principal
		switch {
		case strings.HasPrefix(raw, apiKeyPrefix) && apiKeys:
			p, err = s.apiKeyPrincipal(c, raw)
		case strings.HasPrefix(raw, apiKeyPrefix):
			err = session.Errorf(session.EUNAUTHENTICATED, "API keys are not accepted on this route")
		default:
			p, err = s.auth.Tenant(raw)
		}
		if err != nil {
			return err
		}
		m := c.Request().Method
		if p.Role == RoleViewer && m != "GET" && m != "HEAD" {
			return session.Errorf(session.EFORBIDDEN, "role viewer is read-only")
		}
		c.Set(principalKey, p)
		return next(c)
	}
}

func principal(c echo.Context) Principal {
	p, _ := c.Get(principalKey).(Principal)
	return p
}

// DevToken returns a tenant JWT for development and tests, shaped like the
// tokens Supabase issues (aud, sub, tenant_id, user_role, exp).
func DevToken(secret, audience, tenantID, role string, ttl time.Duration) (string, error) {
	if len(secret) < 16 {
		return "", errors.New("JWT secret must be at least 16 bytes")
	}
	if _, err := uuid.Parse(tenantID); err != nil {
		return "", fmt.Errorf("tenant must be a UUID: %w", err)
	}
	now := time.Now()
	c := claims{
		RegisteredClaims: jwt.RegisteredClaims{
			Subject: "dev-user", Audience: jwt.ClaimStrings{audience},
			ExpiresAt: jwt.NewNumericDate(now.Add(ttl)), IssuedAt: jwt.NewNumericDate(now),
		},
		TenantID: tenantID, UserRole: role,
	}
	return jwt.NewWithClaims(jwt.SigningMethodHS256, c).SignedString([]byte(secret))
}
