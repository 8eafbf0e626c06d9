// Package responsestest is a fake of OpenAI's Responses API (POST
// /v1/responses) for tests, faithful where a client can tell:
//
//   - Authorization must be "Bearer <Config.APIKey>": none gets 401 with
//     code null, a wrong key 401 invalid_api_key with the key masked in
//     the message, as the API does.
//   - The body must be JSON with a model, an input or instructions, known
//     top-level parameters only (else 400 unknown_parameter), and
//     max_output_tokens of at least 16. Streaming is refused (400): the
//     fake answers whole responses only.
//   - text.format of type json_schema needs a name matching
//     ^[a-zA-Z0-9_-]{1,64}$ and an object schema. With strict true the
//     schema is checked as strict Structured Outputs are: the root is an
//     object (not anyOf); every object has additionalProperties false and
//     lists every property in required (and nothing else); only supported
//     keywords (type, description, title, properties, required,
//     additionalProperties, items, enum, const, anyOf, $ref, $defs,
//     definitions, pattern, format, minimum, maximum, exclusiveMinimum,
//     exclusiveMaximum, multipleOf, minItems, maxItems) and string formats
//     appear; and the documented limits hold (MaxObjectProperties,
//     MaxNesting, MaxSchemaStringLength, MaxEnumValues,
//     MaxLargeEnumLength). A violation gets 400 invalid_request_error with
//     param text.format.schema and a message in the API's words
//     ("Invalid schema for response_format 'name': In context=(…), …").
//   - A response has the real shape: id resp_…, object "response",
//     created_at, model, status, output items (a reasoning item, then a
//     message whose content is output_text with the JSON or a refusal),
//     usage with input, output and total tokens, and incomplete_details
//     when status is "incomplete".
//
// Each request takes the next scripted Behavior (Server.Script); with none
// left the fake answers like a model would under strict mode: a JSON
// instance of the request's schema (integers at the middle of their
// bounds, strings filled, arrays empty, the first enum value). Behaviors
// script answers (Text, Answer), refusals, incomplete answers, and faults:
// 429 with Retry-After, 500, 503, and hanging until the client gives up.
package responsestest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Config configures the fake.
type Config struct {
	// APIKey is the key the fake accepts. Required.
	APIKey string
	// Logger receives one debug line per request; nil discards them.
	Logger *slog.Logger
}

// Behavior is how the fake answers one request. The zero Behavior
// answers with the default schema instance.
type Behavior struct {
	// Status, when not 0, answers with this HTTP error status and the
	// API's error body for it (429 rate_limit_exceeded, 500/503
	// server_error, others invalid_request_error).
	Status int
	// RetryAfter, with Status 429, is sent as Retry-After (seconds).
	RetryAfter time.Duration
	// Hang holds the request until the client goes away or the fake is
	// closed, as a stuck upstream would.
	Hang bool
	// Refusal answers with a refusal content part instead of output_text.
	Refusal string
	// Incomplete answers with status "incomplete" and this
	// incomplete_details.reason ("max_output_tokens" or
	// "content_filter"), with a cut-off output text.
	Incomplete string
	// Text is the output_text to answer with, verbatim.
	Text string
	// Answer, when set, computes the output_text from the request.
	Answer func(Request) string
}

// Request is one request the fake received.
type Request struct {
	Path string
	// Body is the decoded JSON body (nil if it did not parse).
	Body map[string]any
	// Authorized is true when the bearer key matched.
	Authorized bool
	// Status is what the fake answered.
	Status int
}

// Model is the request's model.
func (r Request) Model() string { s, _ := r.Body["model"].(string); return s }

// Input is the request's input when it is a string.
func (r Request) Input() string { s, _ := r.Body["input"].(string); return s }

// Instructions is the request's instructions.
func (r Request) Instructions() string { s, _ := r.Body["instructions"].(string); return s }

// Format is the request's text.format object (nil if absent).
func (r Request) Format() map[string]any {
	t, _ := r.Body["text"].(map[string]any)
	f, _ := t["format"].(map[string]any)
	return f
}

// Schema is the request's text.format.schema (nil if absent).
func (r Request) Schema() map[string]any {
	s, _ := r.Format()["schema"].(map[string]any)
	return s
}

// Server is the fake API. Create it with NewServer and Close it.
type Server struct {
	srv    *httptest.Server
	cfg    Config
	log    *slog.Logger
	ctx    context.Context // cancelled by Close: releases hanging requests
	cancel context.CancelFunc

	mu       sync.Mutex
	script   []Behavior
	requests []Request
	hanging  chan struct{} // gets a value when a request starts to hang
}

// NewServer starts the fake on a loopback port.
func NewServer(cfg Config) *Server {
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	ctx, cancel := context.WithCancel(context.Background())
	s := &Server{cfg: cfg, log: log, ctx: ctx, cancel: cancel, hanging: make(chan struct{}, 64)}
	s.srv = httptest.NewServer(http.HandlerFunc(s.serve))
	return s
}

// BaseURL is the API base to configure (OPENAI_BASE_URL), version path
// included.
func (s *Server) BaseURL() string { return s.srv.URL + "/v1" }

// Close releases hanging requests and stops the server.
func (s *Server) Close() {
	s.cancel()
	s.srv.Close()
}

// Script appends behaviors, used one per request in order.
func (s *Server) Script(b ...Behavior) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.script = append(s.script, b...)
}

// Requests returns the requests received so far.
func (s *Server) Requests() []Request {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]Request(nil), s.requests...)
}

// Hanging returns a channel that gets a value each time a request starts
// to hang (Behavior.Hang).
func (s *Server) Hanging() <-chan struct{} { return s.hanging }

func (s *Server) next() Behavior {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.script) == 0 {
		return Behavior{}
	}
	b := s.script[0]
	s.script = s.script[1:]
	return b
}

func (s *Server) record(r Request) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.requests = append(s.requests, r)
}

// apiError writes the API's error body.
func apiError(w http.ResponseWriter, status int, typ, msg string, param, code any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(map[string]any{"error": map[string]any{
		"message": msg, "type": typ, "param": param, "code": code,
	}})
}

// knownParams are the top-level parameters of a create-response request.
func knownParam(k string) bool {
	switch k {
	case "model", "input", "instructions", "max_output_tokens", "max_tool_calls", "metadata",
		"parallel_tool_calls", "previous_response_id", "prompt", "prompt_cache_key",
		"prompt_cache_retention", "reasoning", "safety_identifier", "service_tier", "store",
		"stream", "stream_options", "temperature", "text", "tool_choice", "tools",
		"top_logprobs", "top_p", "truncation", "user", "background", "conversation",
		"include", "context_management":
		return true
	}
	return false
}

// serve handles every request. Route: POST /v1/responses.
func (s *Server) serve(w http.ResponseWriter, r *http.Request) {
	req := Request{Path: r.URL.Path}
	status := s.handle(w, r, &req)
	req.Status = status
	s.record(req)
	s.log.Debug("responsestest: request", "method", r.Method, "path", r.URL.Path, "status", status)
}

func (s *Server) handle(w http.ResponseWriter, r *http.Request, req *Request) int {
	if r.Method != http.MethodPost || r.URL.Path != "/v1/responses" {
		apiError(w, http.StatusNotFound, "invalid_request_error", fmt.Sprintf("Invalid URL (%s %s)", r.Method, r.URL.Path), nil, nil)
		return http.StatusNotFound
	}
	auth := r.Header.Get("Authorization")
	key, hasBearer := strings.CutPrefix(auth, "Bearer ")
	switch {
	case !hasBearer || key == "":
		apiError(w, http.StatusUnauthorized, "invalid_request_error",
			"You didn't provide an API key. You need to provide your API key in an Authorization header using Bearer auth (i.e. Authorization: Bearer YOUR_KEY).", nil, nil)
		return http.StatusUnauthorized
	case key != s.cfg.APIKey:
		apiError(w, http.StatusUnauthorized, "invalid_request_error",
			"Incorrect API key provided: "+mask(key)+". You can find your API key at https://platform.openai.com/account/api-keys.", nil, "invalid_api_key")
		return http.StatusUnauthorized
	}
	req.Authorized = true
	var body map[string]any
	dec := json.NewDecoder(r.Body)
	dec.UseNumber()
	if err := dec.Decode(&body); err != nil {
		apiError(w, http.StatusBadRequest, "invalid_request_error",
			"We could not parse the JSON body of your request. (HINT: This likely means you aren't using your HTTP library correctly.)", nil, nil)
		return http.StatusBadRequest
	}
	req.Body = body
	if status := validate(w, body); status != 0 {
		return status
	}

	b := s.next()
	switch {
	case b.Hang:
		select {
		case s.hanging <- struct{}{}:
		default:
		}
		select {
		case <-r.Context().Done():
		case <-s.ctx.Done():
		}
		return 0 // the client went away; nothing was answered
	case b.Status == http.StatusTooManyRequests:
		if b.RetryAfter > 0 {
			w.Header().Set("Retry-After", strconv.Itoa(int((b.RetryAfter+time.Second-1)/time.Second)))
		}
		w.Header().Set("X-Ratelimit-Limit-Requests", "500")
		w.Header().Set("X-Ratelimit-Remaining-Requests", "0")
		apiError(w, b.Status, "requests", fmt.Sprintf("Rate limit reached for %s in organization org-fake on requests per min (RPM): Limit 500, Used 500, Requested 1. Please try again in %s.", req.Model(), b.RetryAfter), nil, "rate_limit_exceeded")
		return b.Status
	case b.Status == http.StatusInternalServerError:
		apiError(w, b.Status, "server_error", "The server had an error while processing your request. Sorry about that!", nil, "server_error")
		return b.Status
	case b.Status == http.StatusServiceUnavailable:
		apiError(w, b.Status, "server_error", "The engine is currently overloaded, please try again later.", nil, nil)
		return b.Status
	case b.Status != 0:
		apiError(w, b.Status, "invalid_request_error", http.StatusText(b.Status), nil, nil)
		return b.Status
	}

	var text string
	switch {
	case b.Answer != nil:
		text = b.Answer(*req)
	case b.Text != "":
		text = b.Text
	case req.Schema() != nil:
		inst, _ := json.Marshal(Instance(req.Schema()))
		text = string(inst)
	default:
		text = "Fake answer."
	}
	resp := s.response(*req, text, b)
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Openai-Processing-Ms", "1")
	w.Header().Set("X-Request-Id", "req_"+randHex(16))
	_ = json.NewEncoder(w).Encode(resp)
	return http.StatusOK
}

// validate answers 400 for what the API refuses, returning its status, or
// 0 when the request is acceptable.
func validate(w http.ResponseWriter, body map[string]any) int {
	for k := range body {
		if !knownParam(k) {
			apiError(w, http.StatusBadRequest, "invalid_request_error", fmt.Sprintf("Unknown parameter: '%s'.", k), k, "unknown_parameter")
			return http.StatusBadRequest
		}
	}
	if m, _ := body["model"].(string); m == "" {
		apiError(w, http.StatusBadRequest, "invalid_request_error", "Missing required parameter: 'model'.", "model", "missing_required_parameter")
		return http.StatusBadRequest
	}
	if body["input"] == nil && body["instructions"] == nil {
		apiError(w, http.StatusBadRequest, "invalid_request_error", "Missing required parameter: 'input'.", "input", "missing_required_parameter")
		return http.StatusBadRequest
	}
	if st, _ := body["stream"].(bool); st {
		apiError(w, http.StatusBadRequest, "invalid_request_error", "responsestest: streaming is not supported by the fake.", "stream", nil)
		return http.StatusBadRequest
	}
	if v, ok := body["max_output_tokens"]; ok && v != nil {
		n, err := v.(json.Number).Int64()
		if err != nil || n < 16 {
			apiError(w, http.StatusBadRequest, "invalid_request_error",
				fmt.Sprintf("Invalid 'max_output_tokens': integer below minimum value. Expected a value >= 16, but got %v instead.", v), "max_output_tokens", "integer_below_min_value")
			return http.StatusBadRequest
		}
	}
	text, _ := body["text"].(map[string]any)
	format, _ := text["format"].(map[string]any)
	if format == nil {
		return 0
	}
	switch format["type"] {
	case "text", "json_object":
		return 0
	case "json_schema":
	default:
		apiError(w, http.StatusBadRequest, "invalid_request_error",
			fmt.Sprintf("Invalid value: '%v'. Supported values are: 'text', 'json_object', and 'json_schema'.", format["type"]), "text.format.type", "invalid_value")
		return http.StatusBadRequest
	}
	name, _ := format["name"].(string)
	if name == "" {
		apiError(w, http.StatusBadRequest, "invalid_request_error", "Missing required parameter: 'text.format.name'.", "text.format.name", "missing_required_parameter")
		return http.StatusBadRequest
	}
	if !nameOK(name) {
		apiError(w, http.StatusBadRequest, "invalid_request_error",
			fmt.Sprintf("Invalid 'text.format.name': string does not match pattern. Expected a string that matches the pattern '^[a-zA-Z0-9_-]+$'. Got '%s'.", name), "text.format.name", "invalid_value")
		return http.StatusBadRequest
	}
	schema, _ := format["schema"].(map[string]any)
	if schema == nil {
		apiError(w, http.StatusBadRequest, "invalid_request_error", "Missing required parameter: 'text.format.schema'.", "text.format.schema", "missing_required_parameter")
		return http.StatusBadRequest
	}
	if strict, _ := format["strict"].(bool); strict {
		if msg := checkStrict(schema); msg != "" {
			apiError(w, http.StatusBadRequest, "invalid_request_error",
				fmt.Sprintf("Invalid schema for response_format '%s': %s", name, msg), "text.format.schema", "invalid_json_schema")
			return http.StatusBadRequest
		}
	}
	return 0
}

// response builds the API's response object.
func (s *Server) response(req Request, text string, b Behavior) map[string]any {
	inTok := approxTokens(req.Instructions()) + approxTokens(req.Input())
	if sc := req.Schema(); sc != nil {
		raw, _ := json.Marshal(sc)
		inTok += approxTokens(string(raw))
	}
	const reasoningTokens = 64
	status := "completed"
	var incomplete any
	content := []any{map[string]any{"type": "output_text", "annotations": []any{}, "logprobs": []any{}, "text": text}}
	outTok := approxTokens(text) + reasoningTokens
	switch {
	case b.Refusal != "":
		content = []any{map[string]any{"type": "refusal", "refusal": b.Refusal}}
		outTok = approxTokens(b.Refusal) + reasoningTokens
	case b.Incomplete != "":
		status = "incomplete"
		incomplete = map[string]any{"reason": b.Incomplete}
		cut := text[:len(text)/2]
		content[0].(map[string]any)["text"] = cut
		outTok = approxTokens(cut) + reasoningTokens
	}
	var maxOut any
	if v, ok := req.Body["max_output_tokens"]; ok {
		maxOut = v
	}
	store := true
	if v, ok := req.Body["store"].(bool); ok {
		store = v
	}
	msgStatus := "completed"
	if status == "incomplete" {
		msgStatus = "incomplete"
	}
	return map[string]any{
		"id":                   "resp_" + randHex(24),
		"object":               "response",
		"created_at":           time.Now().Unix(),
		"status":               status,
		"background":           false,
		"error":                nil,
		"incomplete_details":   incomplete,
		"instructions":         nilIfEmpty(req.Instructions()),
		"max_output_tokens":    maxOut,
		"max_tool_calls":       nil,
		"model":                req.Model(),
		"parallel_tool_calls":  true,
		"previous_response_id": nil,
		"reasoning":            map[string]any{"effort": "medium", "summary": nil},
		"service_tier":         "default",
		"store":                store,
		"temperature":          1.0,
		"text":                 req.Body["text"],
		"tool_choice":          "auto",
		"tools":                []any{},
		"top_p":                1.0,
		"truncation":           "disabled",
		"user":                 nil,
		"metadata":             map[string]any{},
		"output": []any{
			map[string]any{"id": "rs_" + randHex(24), "type": "reasoning", "summary": []any{}},
			map[string]any{"id": "msg_" + randHex(24), "type": "message", "status": msgStatus, "role": "assistant", "content": content},
		},
		"usage": map[string]any{
			"input_tokens":          inTok,
			"input_tokens_details":  map[string]any{"cached_tokens": 0},
			"output_tokens":         outTok,
			"output_tokens_details": map[string]any{"reasoning_tokens": reasoningTokens},
			"total_tokens":          inTok + outTok,
		},
	}
}

func nilIfEmpty(s string) any {
	if s == "" {
		return nil
	}
	return s
}

// approxTokens stands in for the API's token count: 4 bytes a token.
func approxTokens(s string) int { return (len(s) + 3) / 4 }

// mask shows a key the way the API's 401 message does: its first and
// last few characters.
func mask(key string) string {
	if len(key) <= 8 {
		return "***"
	}
	return key[:3] + strings.Repeat("*", len(key)-7) + key[len(key)-4:]
}

func randHex(n int) string {
	b := make([]byte, n/2)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// Instance returns a JSON value valid for schema, as a model under strict
// mode would produce: objects with every property, integers and numbers
// at the middle of their bounds, strings "Fake answer.", arrays empty,
// enums their first value, anyOf its first branch.
func Instance(schema map[string]any) any {
	return instance(schema, schema)
}

func instance(root, s map[string]any) any {
	if ref, ok := s["$ref"].(string); ok {
		if ref == "#" {
			return instance(root, root)
		}
		for _, defs := range []string{"$defs", "definitions"} {
			if name, ok := strings.CutPrefix(ref, "#/"+defs+"/"); ok {
				m, _ := root[defs].(map[string]any)
				sub, _ := m[name].(map[string]any)
				return instance(root, sub)
			}
		}
		return nil
	}
	if e, ok := s["enum"].([]any); ok && len(e) > 0 {
		return e[0]
	}
	if c, ok := s["const"]; ok {
		return c
	}
	if a, ok := s["anyOf"].([]any); ok && len(a) > 0 {
		sub, _ := a[0].(map[string]any)
		return instance(root, sub)
	}
	t := s["type"]
	if list, ok := t.([]any); ok && len(list) > 0 {
		t = list[0]
	}
	switch t {
	case "object":
		out := map[string]any{}
		props, _ := s["properties"].(map[string]any)
		for k, v := range props {
			sub, _ := v.(map[string]any)
			out[k] = instance(root, sub)
		}
		return out
	case "array":
		return []any{}
	case "integer", "number":
		lo, hasLo := number(s["minimum"])
		hi, hasHi := number(s["maximum"])
		switch {
		case hasLo && hasHi:
			return (lo + hi) / 2
		case hasLo:
			return lo
		case hasHi:
			return hi
		}
		return 0
	case "boolean":
		return false
	case "null":
		return nil
	}
	return "Fake answer."
}

func number(v any) (int64, bool) {
	switch n := v.(type) {
	case json.Number:
		i, err := n.Int64()
		if err != nil {
			f, ferr := n.Float64()
			return int64(f), ferr == nil
		}
		return i, true
	case float64:
		return int64(n), true
	case int:
		return int64(n), true
	case int64:
		return n, true
	}
	return 0, false
}
