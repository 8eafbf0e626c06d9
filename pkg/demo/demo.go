// Package demo is the controller's demonstration page, served at /demo/
// when the DEMO setting is on: a recruiter view (create a position with
// weighted competencies and a candidate, schedule and start an interview)
// and the candidate's interview room (the browser's own WebRTC connection
// to the interview's VM, the "oai-events" data channel, answers typed as
// conversation.item.create events, the live transcript, the lifecycle
// timeline and the end button). It is plain HTML, CSS and JavaScript,
// embedded in the binary, with no build step; it uses only the public API
// of api/openapi.yaml, with a recruiter token the user pastes (kept in the
// browser's localStorage, never served by the controller). Besides its
// files it serves /demo/config.json: the few server settings the page
// needs to offer (the regions an interview may ask for, the pre-warm lead).
package demo

import (
	"embed"
	"encoding/json"
	"io/fs"
	"net/http"
	"strings"
	"time"
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

// Config is what the page learns from the server (GET /demo/config.json).
type Config struct {
	// Regions are the regions an interview may ask for, the first being
	// the default (the controller's REGIONS).
	Regions []string
	// PrewarmLead is how long before its scheduled_at an interview's
	// machine is pre-warmed (PREWARM_LEAD; 0: no pre-warm).
	PrewarmLead time.Duration
}

// configJSON is Config as the page reads it.
type configJSON struct {
	Regions            []string `json:"regions"`
	PrewarmLeadSeconds float64  `json:"prewarm_lead_seconds"`
}

// Handler serves the page: the files of static/ under /demo/, cfg as
// /demo/config.json, and a redirect from /demo to /demo/. Every answer
// carries the page's Content-Security-Policy and is not cached, so a new
// controller binary's page shows at once.
func Handler(cfg Config) http.Handler {
	files, err := fs.Sub(static, "static")
	if err != nil {
		panic("demo: embedded static directory missing: " + err.Error()) // cannot happen: it is embedded
	}
	regions := cfg.Regions
	if regions == nil {
		regions = []string{}
	}
	settings, err := json.Marshal(configJSON{Regions: regions, PrewarmLeadSeconds: cfg.PrewarmLead.Seconds()})
	if err != nil {
		panic("demo: encode config: " + err.Error()) // cannot happen: strings and a number
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
		if r.URL.Path == Prefix+"config.json" {
			// GET /demo/config.json: the settings the page offers.
			if r.Method != http.MethodGet && r.Method != http.MethodHead {
				h.Set("Allow", "GET, HEAD")
				http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
				return
			}
			h.Set("Content-Type", "application/json")
			_, _ = w.Write(settings)
			return
		}
		fileServer.ServeHTTP(w, r)
	})
}
