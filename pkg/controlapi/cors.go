package controlapi

import (
	"fmt"
	"net/http"
	"net/url"
	"strings"

	"github.com/labstack/echo/v4"
)

// What browsers on other origins may send and read (the contract's list).
const (
	corsAllowMethods  = "GET, HEAD, POST, PATCH, DELETE, OPTIONS"
	corsAllowHeaders  = "Authorization, Content-Type, Idempotency-Key, Last-Event-ID"
	corsExposeHeaders = "Location, Retry-After, X-Request-Id, Idempotent-Replayed"
	corsMaxAge        = "600"
)

// ParseOrigins splits a comma-separated CORS_ORIGINS value; blanks are
// dropped, so an empty value gives none (CORS off).
func ParseOrigins(v string) []string {
	var out []string
	for _, o := range strings.Split(v, ",") {
		if o = strings.TrimSpace(o); o != "" {
			out = append(out, o)
		}
	}
	return out
}

// corsPolicy answers browsers on the configured origins: exact origins
// (scheme://host[:port]) or "*" for any. Credentials are bearer tokens,
// never cookies, so "*" is safe and no Allow-Credentials is sent.
type corsPolicy struct {
	any     bool
	origins map[string]bool
}

func newCORSPolicy(origins []string) (*corsPolicy, error) {
	if len(origins) == 0 {
		return nil, nil
	}
	p := &corsPolicy{origins: map[string]bool{}}
	for _, o := range origins {
		if o == "*" {
			p.any = true
			continue
		}
		u, err := url.Parse(o)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" ||
			(u.Path != "" && u.Path != "/") || u.RawQuery != "" || u.User != nil {
			return nil, fmt.Errorf("CORS origin %q: want scheme://host[:port] or *", o)
		}
		p.origins[strings.ToLower(u.Scheme+"://"+u.Host)] = true
	}
	return p, nil
}

func (p *corsPolicy) allows(origin string) bool {
	return p.any || p.origins[strings.ToLower(origin)]
}

// middleware adds the CORS headers for allowed origins and answers their
// preflight requests; a request from another origin gets no CORS header
// (the browser then refuses to hand the answer to the page).
func (p *corsPolicy) middleware(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) error {
		h := c.Response().Header()
		h.Add(echo.HeaderVary, echo.HeaderOrigin)
		origin := c.Request().Header.Get(echo.HeaderOrigin)
		preflight := c.Request().Method == http.MethodOptions &&
			c.Request().Header.Get(echo.HeaderAccessControlRequestMethod) != ""
		if origin == "" || !p.allows(origin) {
			if preflight {
				return c.NoContent(http.StatusNoContent)
			}
			return next(c)
		}
		allow := origin
		if p.any {
			allow = "*"
		}
		h.Set(echo.HeaderAccessControlAllowOrigin, allow)
		if preflight {
			h.Add(echo.HeaderVary, echo.HeaderAccessControlRequestMethod)
			h.Add(echo.HeaderVary, echo.HeaderAccessControlRequestHeaders)
			h.Set(echo.HeaderAccessControlAllowMethods, corsAllowMethods)
			h.Set(echo.HeaderAccessControlAllowHeaders, corsAllowHeaders)
			h.Set(echo.HeaderAccessControlMaxAge, corsMaxAge)
			return c.NoContent(http.StatusNoContent)
		}
		h.Set(echo.HeaderAccessControlExposeHeaders, corsExposeHeaders)
		return next(c)
	}
}
