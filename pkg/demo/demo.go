// Package demo is the controller's demonstration page, served at /demo/
// when the DEMO setting is on: a recruiter view (create a position with
// weighted competencies and a candidate, schedule and start an interview)
// and the candidate's interview room (the browser's own WebRTC connection
// to the interview's VM, the "oai-events" data channel, answers typed as
// conversation.item.create events, the live transcript, the lifecycle
// timeline and the end button). It is plain HTML, CSS and JavaScript,
// embedded in the binary, with no build step; it uses only the public API
// of api/openapi.yaml, with a recruiter token the user pastes (kept in the
// browser's localStorage, never served by the controller).
package demo

import (
	"embed"
	"io/fs"
	"net/http"
	"strings"
)

//go:embed static
var static embed.FS

// Prefix is the path the page is served under.
const Prefix = "/demo/"

// contentSecurityPolicy allows the page's own scripts, styles and API
// calls and nothing else: no inline code, no other origin, no framing.
// Media comes from the RTCPeerConnection (srcObject), not from URLs.
const contentSecurityPolicy = "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; " +
	"img-src 'self' data:; media-src 'self' blob: mediastream:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"

// Handler serves the page: the files of static/ under /demo/, and a
// redirect from /demo to /demo/. Every answer carries the page's
// Content-Security-Policy and is not cached, so a new controller binary's
// page shows at once.
func Handler() http.Handler {
	files, err := fs.Sub(static, "static")
	if err != nil {
		panic("demo: embedded static directory missing: " + err.Error()) // cannot happen: it is embedded
	}
	fileServer := http.StripPrefix(Prefix, http.FileServerFS(files))
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == strings.TrimSuffix(Prefix, "/") {
			http.Redirect(w, r, Prefix, http.StatusMovedPermanently)
			return
		}
		if !strings.HasPrefix(r.URL.Path, Prefix) {
			http.NotFound(w, r)
			return
		}
		h := w.Header()
		h.Set("Content-Security-Policy", contentSecurityPolicy)
		h.Set("X-Content-Type-Options", "nosniff")
		h.Set("Referrer-Policy", "no-referrer")
		h.Set("Permissions-Policy", "microphone=(self), camera=(), geolocation=()")
		h.Set("Cache-Control", "no-cache")
		fileServer.ServeHTTP(w, r)
	})
}
