package controlapi

import (
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/google/uuid"
	"github.com/labstack/echo/v4"

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

// Authenticator verifies Supabase-compatible HS256 JWTs and mints the
// short-lived interview access tokens.
type Authenticator struct {
	secret   []byte
	audience string
	parser   *jwt.Parser
	now      func() time.Time
}

// NewAuthenticator returns an Authenticator for the shared secret.
func NewAuthenticator(secret, audience string) (*Authenticator, error) {
	if len(secret) < 16 {
		return nil, errors.New("JWT secret must be at least 16 bytes")
	}
	if audience == "" {
		audience = "authenticated"
	}
	return &Authenticator{
		secret:   []byte(secret),
		audience: audience,
		parser: jwt.NewParser(jwt.WithValidMethods([]string{"HS256"}), jwt.WithExpirationRequired(),
			jwt.WithLeeway(30*time.Second)),
		now: time.Now,
	}, nil
}

func (a *Authenticator) parse(raw string) (*claims, error) {
	var c claims
	_, err := a.parser.ParseWithClaims(raw, &c, func(*jwt.Token) (any, error) { return a.secret, nil })
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
	}
	return "rejected"
}

func hasAudience(c *claims, aud string) bool {
	for _, a := range c.Audience {
		if a == aud {
			return true
		}
	}
	return false
}

// Tenant authenticates a tenant user's token.
func (a *Authenticator) Tenant(raw string) (Principal, error) {
	c, err := a.parse(raw)
	if err != nil {
		return Principal{}, err
	}
	if !hasAudience(c, a.audience) {
		return Principal{}, session.Errorf(session.EUNAUTHENTICATED, "invalid token: wrong audience")
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
	c, err := a.parse(raw)
	if err != nil {
		return Principal{}, err
	}
	if !hasAudience(c, sessionAudience) || c.InterviewID == "" {
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
	tok, err := jwt.NewWithClaims(jwt.SigningMethodHS256, c).SignedString(a.secret)
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

// requireTenant authenticates tenant users; read-only roles may only read.
func (s *Server) requireTenant(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) error {
		raw, err := bearer(c)
		if err != nil {
			return err
		}
		p, err := s.auth.Tenant(raw)
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
