// Package openaitest is a fake of the OpenAI Realtime API's GA endpoints
// for tests, faithful where a client can tell:
//
//   - POST /v1/realtime/client_secrets: validates the GA session and
//     expires_after, answers {value:"ek_…", expires_at, session}.
//   - POST /v1/realtime/calls: multipart "sdp" + "session" with the server
//     key, or a raw application/sdp body with an ephemeral key. The offer
//     must be real SDP (v=0, media sections, data channel, ICE
//     credentials, fingerprint, setup) and the session GA-shaped, else
//     400 invalid_offer / unknown_parameter. The answer comes from a real
//     pion peer on loopback, so a WebRTC client's ICE, DTLS and data
//     channel connect to it; 201 with Location /v1/realtime/calls/rtc_….
//   - GET /v1/realtime?call_id=…: the sideband WebSocket, server key only;
//     an unknown call or an ephemeral key gets 404 call_id_not_found.
//   - POST /v1/realtime/calls/{id}/hangup: 200, ends the call.
//   - The retired beta shape — /v1/realtime?model= SDP posts,
//     /v1/realtime/sessions, /v1/realtime/transcription_sessions, and any
//     request with an OpenAI-Beta header — gets 400
//     beta_api_shape_disabled (a WebSocket: an error event, then close
//     code 4000).
//
// Each call plays a script (Step) once its events channel is open and a
// sideband is attached: server events go to both, as the API sends them to
// every connection of a session. Client events pace the script
// (AwaitClient); the fake answers session.update with session.updated and
// conversation.item.retrieve with conversation.item.retrieved, and
// otherwise only records them. The fake never echoes the API key.
package openaitest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"mime"
	"mime/multipart"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/coder/websocket"

	"github.com/interviewvm/controlplane/pkg/realtime"
)

// Config configures the fake.
type Config struct {
	// APIKey is the server key the fake accepts. Required.
	APIKey string
	// Script is played on every call; nil means DefaultScript().
	Script []Step
	// Logger receives the fake's debug lines; nil discards them.
	Logger *slog.Logger
	// MaxCallDuration hangs a call up on the API's side. Default 60 min.
	MaxCallDuration time.Duration
}

// Request is one HTTP request the fake received.
type Request struct {
	Method string
	Path   string
	Query  string
	// Header holds the request's headers, Authorization removed.
	Header http.Header
	// Auth says which credential was presented: "api_key",
	// "client_secret", "invalid" or "none".
	Auth string
	// Status is what the fake answered (101 for an accepted WebSocket).
	Status int
}

// ClientEvent is one event a client sent on a call.
type ClientEvent struct {
	// Source is "events_channel" or "sideband".
	Source string
	Type   string
	Raw    json.RawMessage
}

// CallInfo describes one call.
type CallInfo struct {
	ID string
	// Session is the session config the call was created with.
	Session json.RawMessage
	// Secret is true for a call created with an ephemeral key.
	Secret bool
	// Offer is the SDP offer.
	Offer        string
	ClientEvents []ClientEvent
	// Sidebands counts sideband attachments.
	Sidebands int
	HungUp    bool
	Ended     bool
}

// Server is the fake API. Create it with NewServer and Close it.
type Server struct {
	// URL is the base URL to configure as the API's (no /v1).
	URL string

	cfg  Config
	log  *slog.Logger
	srv  *httptest.Server
	ctx  context.Context // cancelled by Close
	stop context.CancelFunc
	wg   sync.WaitGroup // call goroutines

	mu       sync.Mutex
	requests []Request
	calls    map[string]*call
	order    []string // call ids in creation order
	secrets  map[string]secret
	changed  chan struct{}
}

type secret struct {
	session json.RawMessage
	expires time.Time
}

// NewServer starts the fake on a loopback port.
func NewServer(cfg Config) *Server {
	if cfg.Script == nil {
		cfg.Script = DefaultScript()
	}
	if cfg.MaxCallDuration <= 0 {
		cfg.MaxCallDuration = time.Hour
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	ctx, stop := context.WithCancel(context.Background())
	s := &Server{
		cfg: cfg, log: log, ctx: ctx, stop: stop,
		calls: make(map[string]*call), secrets: make(map[string]secret), changed: make(chan struct{}),
	}
	s.srv = httptest.NewServer(http.HandlerFunc(s.serve))
	s.URL = s.srv.URL
	return s
}

// Close ends every call and shuts the fake down.
func (s *Server) Close() {
	s.stop()
	s.mu.Lock()
	calls := slices.Collect(maps.Values(s.calls))
	s.mu.Unlock()
	for _, c := range calls {
		c.end(false)
	}
	s.wg.Wait()
	s.srv.Close()
}

// Requests returns every request received, oldest first.
func (s *Server) Requests() []Request {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.requests)
}

// Calls returns every call, oldest first.
func (s *Server) Calls() []CallInfo {
	s.mu.Lock()
	ids := slices.Clone(s.order)
	s.mu.Unlock()
	var out []CallInfo
	for _, id := range ids {
		if ci, ok := s.Call(id); ok {
			out = append(out, ci)
		}
	}
	return out
}

// Call returns one call.
func (s *Server) Call(id string) (CallInfo, bool) {
	s.mu.Lock()
	c := s.calls[id]
	s.mu.Unlock()
	if c == nil {
		return CallInfo{}, false
	}
	return c.info(), true
}

// Wait waits until cond holds of the calls (checked on every change) or
// ctx ends.
func (s *Server) Wait(ctx context.Context, cond func([]CallInfo) bool) error {
	for {
		s.mu.Lock()
		changed := s.changed
		s.mu.Unlock()
		if cond(s.Calls()) {
			return nil
		}
		select {
		case <-changed:
		case <-ctx.Done():
			return fmt.Errorf("wait for the fake's calls: %w", ctx.Err())
		}
	}
}

// notify wakes Wait callers.
func (s *Server) notify() {
	s.mu.Lock()
	close(s.changed)
	s.changed = make(chan struct{})
	s.mu.Unlock()
}

// statusWriter records the status written.
type statusWriter struct {
	http.ResponseWriter
	status int
}

func (w *statusWriter) WriteHeader(code int) {
	if w.status == 0 {
		w.status = code
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusWriter) Write(b []byte) (int, error) {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	return w.ResponseWriter.Write(b)
}

// Unwrap lets http.ResponseController and the WebSocket upgrade reach the
// underlying writer.
func (w *statusWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

func (s *Server) serve(w http.ResponseWriter, r *http.Request) {
	auth := s.authKind(r)
	sw := &statusWriter{ResponseWriter: w}
	defer func() {
		h := r.Header.Clone()
		h.Del("Authorization")
		status := sw.status
		if status == 0 {
			status = http.StatusSwitchingProtocols
		}
		s.mu.Lock()
		s.requests = append(s.requests, Request{
			Method: r.Method, Path: r.URL.Path, Query: r.URL.RawQuery, Header: h, Auth: auth, Status: status,
		})
		s.mu.Unlock()
		s.notify()
	}()
	w = sw

	isWS := strings.EqualFold(r.Header.Get("Upgrade"), "websocket")
	if r.Header.Get("OpenAI-Beta") != "" {
		if isWS {
			s.rejectBetaSocket(w, r)
			return
		}
		betaDisabled(w)
		return
	}
	path := r.URL.Path
	switch {
	case path == "/v1/realtime" && isWS && r.Method == http.MethodGet:
		s.handleSideband(w, r, auth)
	case path == "/v1/realtime":
		// The beta interface posted SDP here with ?model=.
		betaDisabled(w)
	case path == "/v1/realtime/sessions" || path == "/v1/realtime/transcription_sessions":
		betaDisabled(w)
	case path == "/v1/realtime/client_secrets":
		if !allow(w, r, http.MethodPost) || !needKey(w, auth) {
			return
		}
		s.handleClientSecret(w, r)
	case path == "/v1/realtime/calls":
		if !allow(w, r, http.MethodPost) {
			return
		}
		s.handleCreateCall(w, r, auth)
	case strings.HasPrefix(path, "/v1/realtime/calls/"):
		rest := strings.TrimPrefix(path, "/v1/realtime/calls/")
		id, action, _ := strings.Cut(rest, "/")
		switch action {
		case "hangup":
			if !allow(w, r, http.MethodPost) || !needKey(w, auth) {
				return
			}
			s.handleHangup(w, id)
		case "accept", "reject", "refer":
			writeError(w, http.StatusBadRequest, realtime.TypeInvalidRequest, realtime.CodeInvalidValue, "",
				"This call is not a SIP call.")
		default:
			writeError(w, http.StatusNotFound, realtime.TypeInvalidRequest, "", "", "Unknown route.")
		}
	default:
		writeError(w, http.StatusNotFound, realtime.TypeInvalidRequest, "", "", "Unknown route.")
	}
}

// authKind classifies the request's bearer credential.
func (s *Server) authKind(r *http.Request) string {
	tok, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	switch {
	case !ok || tok == "":
		return "none"
	case tok == s.cfg.APIKey:
		return "api_key"
	case strings.HasPrefix(tok, "ek_"):
		s.mu.Lock()
		sec, found := s.secrets[tok]
		s.mu.Unlock()
		if found && time.Now().Before(sec.expires) {
			return "client_secret"
		}
	}
	return "invalid"
}

// bearer returns the request's bearer token.
func bearer(r *http.Request) string {
	tok, _ := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	return tok
}

func allow(w http.ResponseWriter, r *http.Request, method string) bool {
	if r.Method == method {
		return true
	}
	w.Header().Set("Allow", method)
	writeError(w, http.StatusMethodNotAllowed, realtime.TypeInvalidRequest, "", "", "Method not allowed.")
	return false
}

// needKey answers 401 unless the server key was presented.
func needKey(w http.ResponseWriter, auth string) bool {
	switch auth {
	case "api_key":
		return true
	case "none":
		writeError(w, http.StatusUnauthorized, realtime.TypeInvalidRequest, "", "",
			"You didn't provide an API key. You need to provide your API key in an Authorization header using Bearer auth.")
	default:
		writeError(w, http.StatusUnauthorized, realtime.TypeInvalidRequest, realtime.CodeInvalidAPIKey, "",
			"Incorrect API key provided.")
	}
	return false
}

func betaDisabled(w http.ResponseWriter) {
	writeError(w, http.StatusBadRequest, realtime.TypeInvalidRequest, realtime.CodeBetaShape, "",
		"The Realtime Beta API is no longer supported. Please use /v1/realtime for the GA API.")
}

// rejectBetaSocket does what the API does to a beta WebSocket: upgrade,
// send an error event, close with code 4000.
func (s *Server) rejectBetaSocket(w http.ResponseWriter, r *http.Request) {
	conn, err := websocket.Accept(w, r, nil)
	if err != nil {
		return
	}
	ctx, cancel := context.WithTimeout(s.ctx, 5*time.Second)
	defer cancel()
	_ = conn.Write(ctx, websocket.MessageText, encode(realtime.Event{
		Type: realtime.EventError, EventID: newID("event_"),
		Error: &realtime.ErrorDetail{Type: realtime.TypeInvalidRequest, Code: realtime.CodeBetaShape,
			Message: "The Realtime Beta API is no longer supported. Please use /v1/realtime for the GA API."},
	}))
	_ = conn.Close(4000, "invalid_request_error.beta_api_shape_disabled")
}

// writeError writes the API's error envelope.
func writeError(w http.ResponseWriter, status int, typ, code, param, msg string) {
	nullable := func(v string) any {
		if v == "" {
			return nil
		}
		return v
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(map[string]any{"error": map[string]any{
		"message": msg, "type": typ, "param": nullable(param), "code": nullable(code),
	}})
}

// handleClientSecret handles POST /v1/realtime/client_secrets.
func (s *Server) handleClientSecret(w http.ResponseWriter, r *http.Request) {
	if mt, _, _ := mime.ParseMediaType(r.Header.Get("Content-Type")); mt != "application/json" {
		writeError(w, http.StatusBadRequest, realtime.TypeInvalidRequest, "", "", "Content-Type must be application/json.")
		return
	}
	var req map[string]json.RawMessage
	if err := json.NewDecoder(io.LimitReader(r.Body, 1<<20)).Decode(&req); err != nil {
		writeError(w, http.StatusBadRequest, realtime.TypeInvalidRequest, "", "", "We could not parse the JSON body of your request.")
		return
	}
	ttl := 600
	for k, v := range req {
		switch k {
		case "session":
		case "expires_after":
			var ea struct {
				Anchor  string `json:"anchor"`
				Seconds *int   `json:"seconds"`
			}
			if json.Unmarshal(v, &ea) != nil || ea.Anchor != "created_at" {
				writeError(w, http.StatusBadRequest, realtime.TypeInvalidRequest, realtime.CodeInvalidValue, "expires_after.anchor",
					"expires_after.anchor must be 'created_at'.")
				return
			}
			if ea.Seconds != nil {
				if *ea.Seconds < 10 || *ea.Seconds > 7200 {
					writeError(w, http.StatusBadRequest, realtime.TypeInvalidRequest, realtime.CodeInvalidValue, "expires_after.seconds",
						"expires_after.seconds must be between 10 and 7200.")
					return
				}
				ttl = *ea.Seconds
			}
		default:
			writeError(w, http.StatusBadRequest, realtime.TypeInvalidRequest, realtime.CodeUnknownParam, k,
				fmt.Sprintf("Unknown parameter: '%s'.", k))
			return
		}
	}
	sess := req["session"]
	if sess == nil {
		sess = json.RawMessage(`{"type":"realtime"}`)
	}
	if apiErr := checkSession(sess, true); apiErr != nil {
		apiErr.write(w)
		return
	}
	value := newID("ek_")
	expires := time.Now().Add(time.Duration(ttl) * time.Second)
	s.mu.Lock()
	s.secrets[value] = secret{session: sess, expires: expires}
	s.mu.Unlock()
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(map[string]any{
		"value": value, "expires_at": expires.Unix(), "session": sessionObject(sess, newID("sess_")),
	})
}

// sessionObject is the session as the API reports it: the request's
// fields plus object, id and defaults.
func sessionObject(req json.RawMessage, id string) map[string]any {
	m := map[string]any{}
	_ = json.Unmarshal(req, &m)
	m["object"] = "realtime.session"
	m["id"] = id
	if _, ok := m["model"]; !ok {
		m["model"] = "gpt-realtime"
	}
	if _, ok := m["output_modalities"]; !ok {
		m["output_modalities"] = []string{"audio"}
	}
	return m
}

// handleCreateCall handles POST /v1/realtime/calls.
func (s *Server) handleCreateCall(w http.ResponseWriter, r *http.Request, auth string) {
	if auth != "api_key" && auth != "client_secret" {
		needKey(w, auth)
		return
	}
	mt, params, err := mime.ParseMediaType(r.Header.Get("Content-Type"))
	if err != nil {
		writeError(w, http.StatusBadRequest, realtime.TypeInvalidRequest, "", "", "Content-Type must be multipart/form-data or application/sdp.")
		return
	}
	var offer string
	var sess json.RawMessage
	switch mt {
	case "multipart/form-data":
		var apiErr *apiError
		offer, sess, apiErr = readCallForm(r, params["boundary"])
		if apiErr != nil {
			apiErr.write(w)
			return
		}
	case "application/sdp":
		b, err := io.ReadAll(io.LimitReader(r.Body, 1<<20))
		if err != nil {
			writeError(w, http.StatusBadRequest, realtime.TypeInvalidRequest, "", "", "Could not read the request body.")
			return
		}
		offer = string(b)
	default:
		writeError(w, http.StatusBadRequest, realtime.TypeInvalidRequest, "", "", "Content-Type must be multipart/form-data or application/sdp.")
		return
	}
	if auth == "client_secret" {
		if sess != nil {
			writeError(w, http.StatusBadRequest, realtime.TypeInvalidRequest, realtime.CodeUnknownParam, "session",
				"The session is configured by the client secret.")
			return
		}
		s.mu.Lock()
		sess = s.secrets[bearer(r)].session
		s.mu.Unlock()
	}
	if sess == nil {
		sess = json.RawMessage(`{"type":"realtime"}`)
	}
	if apiErr := checkSession(sess, false); apiErr != nil {
		apiErr.write(w)
		return
	}
	if err := realtime.CheckOffer(offer); err != nil {
		writeError(w, http.StatusBadRequest, realtime.TypeInvalidRequest, realtime.CodeInvalidOffer, "sdp",
			"Invalid SDP offer. Please try again with a WHIP-compliant offer. ("+err.Error()+")")
		return
	}
	c, err := s.newCall(r.Context(), offer, sess, auth == "client_secret")
	if err != nil {
		writeError(w, http.StatusBadRequest, realtime.TypeInvalidRequest, realtime.CodeInvalidOffer, "sdp",
			"Invalid SDP offer. Please try again with a WHIP-compliant offer. ("+err.Error()+")")
		return
	}
	w.Header().Set("Location", "/v1/realtime/calls/"+c.id)
	w.Header().Set("Content-Type", "application/sdp")
	w.WriteHeader(http.StatusCreated)
	_, _ = io.WriteString(w, c.peer.AnswerSDP())
}

// readCallForm reads the multipart parts of a call: sdp (required) and
// session (optional), nothing else.
func readCallForm(r *http.Request, boundary string) (string, json.RawMessage, *apiError) {
	if boundary == "" {
		return "", nil, badRequest("", "", "The multipart body has no boundary.")
	}
	mr := multipart.NewReader(io.LimitReader(r.Body, 2<<20), boundary)
	var offer *string
	var sess json.RawMessage
	for {
		p, err := mr.NextPart()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return "", nil, badRequest("", "", "The multipart body does not parse.")
		}
		data, err := io.ReadAll(p)
		if err != nil {
			return "", nil, badRequest("", "", "The multipart body does not parse.")
		}
		ct, _, _ := mime.ParseMediaType(p.Header.Get("Content-Type"))
		switch p.FormName() {
		case "sdp":
			if ct != "" && ct != "application/sdp" && ct != "text/plain" {
				return "", nil, badRequest(realtime.CodeInvalidValue, "sdp", "The sdp part must be application/sdp.")
			}
			o := string(data)
			offer = &o
		case "session":
			if ct != "" && ct != "application/json" && ct != "text/plain" {
				return "", nil, badRequest(realtime.CodeInvalidValue, "session", "The session part must be application/json.")
			}
			sess = data
		default:
			return "", nil, badRequest(realtime.CodeUnknownParam, p.FormName(), fmt.Sprintf("Unknown parameter: '%s'.", p.FormName()))
		}
	}
	if offer == nil {
		return "", nil, badRequest(realtime.CodeMissingParam, "sdp", "Missing required parameter: 'sdp'.")
	}
	return *offer, sess, nil
}

// handleHangup handles POST /v1/realtime/calls/{id}/hangup.
func (s *Server) handleHangup(w http.ResponseWriter, id string) {
	s.mu.Lock()
	c := s.calls[id]
	s.mu.Unlock()
	if c == nil || c.isEnded() {
		writeError(w, http.StatusNotFound, realtime.TypeInvalidRequest, realtime.CodeCallNotFound, "call_id",
			"No call found for the provided call_id.")
		return
	}
	c.end(true)
	w.WriteHeader(http.StatusOK)
}

// handleSideband handles GET /v1/realtime?call_id=… (WebSocket).
func (s *Server) handleSideband(w http.ResponseWriter, r *http.Request, auth string) {
	id := r.URL.Query().Get("call_id")
	if id == "" {
		writeError(w, http.StatusBadRequest, realtime.TypeInvalidRequest, realtime.CodeMissingParam, "call_id",
			"The fake serves sideband connections only: give call_id.")
		return
	}
	if auth != "api_key" && auth != "client_secret" {
		needKey(w, auth)
		return
	}
	s.mu.Lock()
	c := s.calls[id]
	s.mu.Unlock()
	if c == nil || c.isEnded() || auth != "api_key" {
		writeError(w, http.StatusNotFound, realtime.TypeInvalidRequest, realtime.CodeCallNotFound, "",
			"No session found for the provided call_id")
		return
	}
	if c.unreachable() {
		cutConnection(w)
		return
	}
	conn, err := websocket.Accept(w, r, nil)
	if err != nil {
		return
	}
	conn.SetReadLimit(1 << 20)
	c.serveSideband(conn)
}

// cutConnection closes the client's connection without an answer, as a
// network outage would.
func cutConnection(w http.ResponseWriter) {
	hj, ok := w.(http.Hijacker)
	if !ok {
		panic(http.ErrAbortHandler)
	}
	conn, _, err := hj.Hijack()
	if err != nil {
		panic(http.ErrAbortHandler)
	}
	_ = conn.Close()
}

// apiError is an error answer in the making.
type apiError struct {
	status                    int
	typ, code, param, message string
}

func (e *apiError) write(w http.ResponseWriter) {
	writeError(w, e.status, e.typ, e.code, e.param, e.message)
}

func badRequest(code, param, msg string) *apiError {
	return &apiError{status: http.StatusBadRequest, typ: realtime.TypeInvalidRequest, code: code, param: param, message: msg}
}

// checkSession validates a GA session config the way the API does:
// type required, only GA fields, nested audio config. The retired flat
// beta fields are unknown parameters.
func checkSession(raw json.RawMessage, transcriptionOK bool) *apiError {
	var m map[string]json.RawMessage
	if err := json.Unmarshal(raw, &m); err != nil || m == nil {
		return badRequest(realtime.CodeInvalidValue, "session", "session must be a JSON object.")
	}
	var typ string
	if json.Unmarshal(m["type"], &typ) != nil || typ == "" {
		return badRequest(realtime.CodeMissingParam, "session.type", "Missing required parameter: 'session.type'.")
	}
	if typ != realtime.SessionTypeRealtime && (typ != "transcription" || !transcriptionOK) {
		return badRequest(realtime.CodeInvalidValue, "session.type", fmt.Sprintf("Invalid value: '%s'.", typ))
	}
	allowed := []string{"type", "model", "instructions", "output_modalities", "audio", "include", "tracing",
		"tools", "tool_choice", "parallel_tool_calls", "max_output_tokens", "truncation", "prompt", "reasoning"}
	if apiErr := onlyKeys(m, "session", allowed); apiErr != nil {
		return apiErr
	}
	if om, ok := m["output_modalities"]; ok {
		var mods []string
		if json.Unmarshal(om, &mods) != nil || len(mods) != 1 || (mods[0] != "audio" && mods[0] != "text") {
			return badRequest(realtime.CodeInvalidValue, "session.output_modalities", "output_modalities must be [\"audio\"] or [\"text\"].")
		}
	}
	audio, ok := m["audio"]
	if !ok {
		return nil
	}
	var am map[string]json.RawMessage
	if json.Unmarshal(audio, &am) != nil {
		return badRequest(realtime.CodeInvalidValue, "session.audio", "session.audio must be an object.")
	}
	if apiErr := onlyKeys(am, "session.audio", []string{"input", "output"}); apiErr != nil {
		return apiErr
	}
	if in, ok := am["input"]; ok {
		var im map[string]json.RawMessage
		if json.Unmarshal(in, &im) != nil {
			return badRequest(realtime.CodeInvalidValue, "session.audio.input", "session.audio.input must be an object.")
		}
		if apiErr := onlyKeys(im, "session.audio.input", []string{"format", "transcription", "noise_reduction", "turn_detection"}); apiErr != nil {
			return apiErr
		}
		if tr, ok := im["transcription"]; ok && string(tr) != "null" {
			var t struct {
				Model string `json:"model"`
			}
			if json.Unmarshal(tr, &t) != nil || t.Model == "" {
				return badRequest(realtime.CodeMissingParam, "session.audio.input.transcription.model", "Missing required parameter: 'session.audio.input.transcription.model'.")
			}
		}
		if td, ok := im["turn_detection"]; ok && string(td) != "null" {
			var t struct {
				Type string `json:"type"`
			}
			if json.Unmarshal(td, &t) != nil || (t.Type != "server_vad" && t.Type != "semantic_vad") {
				return badRequest(realtime.CodeInvalidValue, "session.audio.input.turn_detection.type", "turn_detection.type must be server_vad or semantic_vad.")
			}
		}
	}
	if out, ok := am["output"]; ok {
		var om map[string]json.RawMessage
		if json.Unmarshal(out, &om) != nil {
			return badRequest(realtime.CodeInvalidValue, "session.audio.output", "session.audio.output must be an object.")
		}
		if apiErr := onlyKeys(om, "session.audio.output", []string{"format", "voice", "speed"}); apiErr != nil {
			return apiErr
		}
	}
	return nil
}

// onlyKeys rejects any key of m not in allowed.
func onlyKeys(m map[string]json.RawMessage, prefix string, allowed []string) *apiError {
	for _, k := range slices.Sorted(maps.Keys(m)) {
		if !slices.Contains(allowed, k) {
			return badRequest(realtime.CodeUnknownParam, prefix+"."+k, fmt.Sprintf("Unknown parameter: '%s.%s'.", prefix, k))
		}
	}
	return nil
}

// newID returns prefix followed by 32 random hex digits.
func newID(prefix string) string {
	b := make([]byte, 16)
	_, _ = rand.Read(b)
	return prefix + hex.EncodeToString(b)
}
