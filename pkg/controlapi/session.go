package controlapi

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"strings"

	"github.com/labstack/echo/v4"

	"github.com/interviewvm/controlplane/pkg/session"
)

// maxSDP bounds an SDP offer.
const maxSDP = "64K"

// requireSession authenticates a session route: an interview access token
// for this very interview, or a tenant JWT allowed to write.
func (s *Server) requireSession(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) error {
		raw, err := bearer(c)
		if err != nil {
			return err
		}
		id, err := pathID(c, "id")
		if err != nil {
			return err
		}
		if p, err := s.auth.Session(raw); err == nil {
			if p.InterviewID != id {
				// Scoped to another interview: this one is not its business.
				return session.Errorf(session.ENOTFOUND, "not found")
			}
			c.Set(principalKey, p)
			return next(c)
		}
		p, err := s.auth.Tenant(raw)
		if err != nil {
			return err
		}
		if p.Role == RoleViewer {
			return session.Errorf(session.EFORBIDDEN, "role viewer is read-only")
		}
		c.Set(principalKey, p)
		return next(c)
	}
}

// handleSessionProxy handles "POST /v1/interviews/{id}/session/{sdp,token,call}":
// it forwards the request to the interview's VM at its provider address,
// without the caller's credentials. An answered SDP offer moves the
// interview to in_progress.
func (s *Server) handleSessionProxy(c echo.Context) error {
	id, err := pathID(c, "id")
	if err != nil {
		return err
	}
	p := principal(c)
	ctx := c.Request().Context()
	iv, err := s.catalog.Interview(ctx, p.Scope(), id)
	if err != nil {
		return err
	}
	if !iv.Connectable() {
		return session.Errorf(session.ECONFLICT, "interview is %s, not ready for a connection", iv.Status)
	}
	route := c.Path()[len("/v1/interviews/:id"):] // /session/sdp, /session/token, /session/call
	if route == "/session/sdp" {
		if err := checkOffer(c); err != nil {
			return err
		}
	}
	if s.cfg.FlyReplayApp != "" && iv.Machine.Provider == "fly" {
		// Fly's proxy replays the request to the machine itself, rewritten
		// to the VM's path and without the caller's credentials. The
		// controller does not see the answer, so in this mode the interview
		// stays ready until the VM reports otherwise.
		c.Response().Header().Set(echo.HeaderContentType, "application/vnd.fly.replay+json")
		return c.JSON(http.StatusOK, map[string]any{
			"app": s.cfg.FlyReplayApp, "instance": iv.Machine.ID, "timeout": "10s",
			"transform": map[string]any{"path": route, "delete_headers": []string{"Authorization", "Cookie"}},
		})
	}
	target := &url.URL{Scheme: "http", Host: iv.Machine.Addr}
	var proxyErr error
	rp := &httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) {
			pr.SetURL(target)
			pr.Out.URL.Path, pr.Out.URL.RawPath = route, ""
			pr.Out.URL.RawQuery = ""
			pr.Out.Header.Del(echo.HeaderAuthorization)
			pr.Out.Header.Del("Cookie")
			pr.Out.Header.Set(echo.HeaderXRequestID, c.Response().Header().Get(echo.HeaderXRequestID))
		},
		Transport: s.vmTransport,
		ModifyResponse: func(resp *http.Response) error {
			if route == "/session/sdp" && resp.StatusCode == http.StatusCreated {
				if err := s.lifecycle.Connected(context.WithoutCancel(ctx), p.Scope(), id); err != nil {
					s.logger.Warn("record connection", "session_id", id, "error", err)
				}
			}
			return nil
		},
		ErrorHandler: func(_ http.ResponseWriter, _ *http.Request, err error) { proxyErr = err },
	}
	pctx, cancel := context.WithTimeout(ctx, s.cfg.VMTimeout)
	defer cancel()
	rp.ServeHTTP(c.Response(), c.Request().WithContext(pctx))
	if proxyErr != nil {
		s.logger.Warn("session VM did not answer", "session_id", iv.ID, "tenant_id", iv.TenantID,
			"machine_id", iv.Machine.ID, "route", route, "error", proxyErr)
		var ne net.Error
		if errors.Is(proxyErr, context.DeadlineExceeded) || errors.As(proxyErr, &ne) && ne.Timeout() {
			return session.Errorf(session.EGATEWAYTIMEOUT, "the interview's VM did not answer in time")
		}
		var mbe *http.MaxBytesError
		if errors.As(proxyErr, &mbe) {
			return session.Errorf(session.ETOOLARGE, "request body too large")
		}
		return session.Errorf(session.EBADGATEWAY, "the interview's VM is not answering")
	}
	return nil
}

// checkOffer refuses what cannot be an SDP offer before it reaches a VM:
// the wrong content type, or a body that does not start like SDP.
func checkOffer(c echo.Context) error {
	ct := strings.ToLower(strings.TrimSpace(strings.Split(c.Request().Header.Get(echo.HeaderContentType), ";")[0]))
	if ct != "application/sdp" {
		return &echo.HTTPError{Code: http.StatusUnsupportedMediaType, Message: "content type must be application/sdp"}
	}
	body, err := io.ReadAll(c.Request().Body)
	if err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			return session.Errorf(session.ETOOLARGE, "SDP offer larger than %s", maxSDP)
		}
		return session.Errorf(session.EINVALID, "read SDP offer: %v", err)
	}
	if !bytes.HasPrefix(body, []byte("v=0\r\n")) && !bytes.HasPrefix(body, []byte("v=0\n")) {
		return session.Errorf(session.EINVALID, "body is not an SDP offer (it must start with v=0)")
	}
	c.Request().Body = io.NopCloser(bytes.NewReader(body))
	c.Request().ContentLength = int64(len(body))
	return nil
}
