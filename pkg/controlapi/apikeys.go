package controlapi

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"net/http"
	"strings"
	"unicode"
	"unicode/utf8"

	"github.com/labstack/echo/v4"

	"github.com/interviewvm/controlplane/pkg/session"
)

// apiKeyPrefix starts every tenant API key; what follows is 32 random
// bytes in unpadded base64url (43 characters).
const (
	apiKeyPrefix    = "ik_"
	apiKeyLen       = len(apiKeyPrefix) + 43
	apiKeyShownLen  = len(apiKeyPrefix) + 8
	maxAPIKeyName   = 100
	apiKeyAlphabet  = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
	apiKeySubjectOf = "api_key:"
)

// newAPIKey returns a fresh secret and the hash it is stored by.
func newAPIKey() (string, []byte, error) {
	var b [32]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", nil, err
	}
	key := apiKeyPrefix + base64.RawURLEncoding.EncodeToString(b[:])
	h := sha256.Sum256([]byte(key))
	return key, h[:], nil
}

// wellFormedAPIKey reports whether raw has the shape of a key this API
// issues, so garbage is refused without a database lookup.
func wellFormedAPIKey(raw string) bool {
	if len(raw) != apiKeyLen || !strings.HasPrefix(raw, apiKeyPrefix) {
		return false
	}
	for i := len(apiKeyPrefix); i < len(raw); i++ {
		if !strings.ContainsRune(apiKeyAlphabet, rune(raw[i])) {
			return false
		}
	}
	return true
}

// apiKeyPrincipal authenticates a tenant API key. The key is looked up in
// the database on every request, so a deleted key is refused at once on
// every replica.
func (s *Server) apiKeyPrincipal(c echo.Context, raw string) (Principal, error) {
	bad := session.Errorf(session.EUNAUTHENTICATED, "invalid API key")
	if !wellFormedAPIKey(raw) {
		return Principal{}, bad
	}
	h := sha256.Sum256([]byte(raw))
	k, err := s.catalog.APIKeyByHash(c.Request().Context(), h[:])
	if err != nil {
		var de *session.Error
		if errors.As(err, &de) && de.Code == session.ENOTFOUND {
			return Principal{}, bad
		}
		return Principal{}, err
	}
	return Principal{Subject: apiKeySubjectOf + k.ID, TenantID: k.TenantID, Role: k.Role}, nil
}

// requireAdmin refuses every role but admin.
func requireAdmin(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) error {
		if r := principal(c).Role; r != RoleAdmin {
			return session.Errorf(session.EFORBIDDEN, "role %s may not do this: admin only", r)
		}
		return next(c)
	}
}

type apiKeyInput struct {
	Name string `json:"name"`
	Role string `json:"role"`
}

// apiKeyCreated is the answer of a create: the only one carrying the key.
type apiKeyCreated struct {
	session.APIKey
	Key string `json:"key"`
}

// handleAPIKeyCreate handles "POST /v1/api-keys" (admin only).
func (s *Server) handleAPIKeyCreate(c echo.Context) error {
	var in apiKeyInput
	if err := decode(c, &in); err != nil {
		return err
	}
	name := strings.TrimSpace(in.Name)
	if !utf8.ValidString(in.Name) || strings.IndexFunc(in.Name, unicode.IsControl) >= 0 {
		return session.Errorf(session.EINVALID, "name must be text without control characters")
	}
	if err := checkText("name", name, 1, maxAPIKeyName); err != nil {
		return err
	}
	switch in.Role {
	case RoleAdmin, RoleRecruiter, RoleViewer:
	default:
		return session.Errorf(session.EINVALID, "role must be one of admin, recruiter, viewer")
	}
	key, hash, err := newAPIKey()
	if err != nil {
		return err
	}
	out, err := s.catalog.CreateAPIKey(c.Request().Context(), principal(c).Scope(),
		session.APIKey{Name: name, Role: in.Role, Prefix: key[:apiKeyShownLen]}, hash)
	if err != nil {
		return err
	}
	return c.JSON(http.StatusCreated, apiKeyCreated{APIKey: out, Key: key})
}

// handleAPIKeyList handles "GET /v1/api-keys" (admin only).
func (s *Server) handleAPIKeyList(c echo.Context) error {
	p, err := page(c)
	if err != nil {
		return err
	}
	items, next, err := s.catalog.ListAPIKeys(c.Request().Context(), principal(c).Scope(), p)
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, newList(items, next))
}

// handleAPIKeyDelete handles "DELETE /v1/api-keys/{id}" (admin only).
func (s *Server) handleAPIKeyDelete(c echo.Context) error {
	id, err := pathID(c, "id")
	if err != nil {
		return err
	}
	if err := s.catalog.DeleteAPIKey(c.Request().Context(), principal(c).Scope(), id); err != nil {
		return err
	}
	return c.NoContent(http.StatusNoContent)
}
