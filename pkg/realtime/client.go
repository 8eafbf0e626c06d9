// Package realtime is a client of the OpenAI Realtime API in its GA shape
// (the beta shape was retired and is never used): it mints ephemeral
// client secrets, creates WebRTC calls through the unified interface
// (multipart "sdp" + "session" with the server key), attaches the sideband
// WebSocket to a call to receive every server event, and hangs calls up.
// It also holds the GA event schema the control plane reads (Event), an
// SDP offer check (CheckOffer), and the models and voice of a session
// (Voice).
//
// The transport is the official SDK, github.com/openai/openai-go/v3: its
// realtime package's ClientSecrets, Calls and Connect (with call_id for the
// sideband). Only that package and option are imported, never the SDK's
// root package, to keep the session VM's binary small. Server events are
// read raw from the SDK's connection and decoded into Event, the subset
// of the schema the transcript needs.
//
// The server API key is only ever sent in the Authorization header: it
// never appears in an error, a log line or anything returned. The SDK's
// error values hold the request (and so the key); they are turned into
// *APIError, which holds none, before they leave this package.
package realtime

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"path"
	"strings"
	"time"

	"github.com/openai/openai-go/v3/option"
	"github.com/openai/openai-go/v3/packages/param"
	oairt "github.com/openai/openai-go/v3/realtime"
)

// DefaultBaseURL is OpenAI's API.
const DefaultBaseURL = "https://api.openai.com"

// Defaults of Config.
const (
	DefaultTimeout = 30 * time.Second
	// maxBody bounds how much of an answer the client reads.
	maxBody = 1 << 20
)

// Config configures a Client.
type Config struct {
	// BaseURL is the API's origin, without /v1. Default DefaultBaseURL.
	BaseURL string
	// APIKey is the server's standard API key. It authenticates call
	// creation, client secrets, the sideband and hang-up.
	APIKey string
	// HTTPClient sends the REST calls. Default: a client with its own
	// transport and a Timeout of DefaultTimeout.
	HTTPClient *http.Client
	// Logger receives debug lines; nil discards them.
	Logger *slog.Logger
}

// Client calls the Realtime API. It is safe for concurrent use.
type Client struct {
	base    *url.URL
	baseErr error
	apiKey  string
	http    *http.Client
	log     *slog.Logger
	// sdk is the official SDK's realtime service: client secrets and
	// calls go through it.
	sdk oairt.RealtimeService
}

// New returns a Client. An invalid BaseURL or an empty APIKey is reported
// by every call.
func New(cfg Config) *Client {
	c := &Client{apiKey: cfg.APIKey, http: cfg.HTTPClient, log: cfg.Logger}
	raw := cfg.BaseURL
	if raw == "" {
		raw = DefaultBaseURL
	}
	c.base, c.baseErr = parseBase(raw)
	if c.baseErr == nil && c.apiKey == "" {
		c.baseErr = errors.New("realtime API key is empty")
	}
	if c.http == nil {
		transport := http.DefaultTransport
		if t, ok := http.DefaultTransport.(*http.Transport); ok {
			transport = t.Clone()
		}
		c.http = &http.Client{Transport: transport, Timeout: DefaultTimeout}
	}
	if c.log == nil {
		c.log = slog.New(slog.DiscardHandler)
	}
	if c.baseErr == nil {
		// Retries stay with the caller (the broker decides what a failure
		// means); the SDK's default of two would hide faults and delay
		// answers to the browser.
		c.sdk = oairt.NewRealtimeService(
			option.WithBaseURL(c.base.JoinPath("v1").String()+"/"),
			option.WithAPIKey(c.apiKey),
			option.WithHTTPClient(c.http),
			option.WithMaxRetries(0),
		)
	}
	return c
}

func parseBase(raw string) (*url.URL, error) {
	u, err := url.Parse(raw)
	if err != nil {
		return nil, fmt.Errorf("parse realtime base URL: %w", err)
	}
	if u.Scheme != "http" && u.Scheme != "https" || u.Host == "" {
		return nil, fmt.Errorf("realtime base URL %q: want http(s)://host[:port]", u.Redacted())
	}
	u.User = nil
	u.Path = strings.TrimSuffix(u.Path, "/")
	u.RawQuery, u.Fragment = "", ""
	return u, nil
}

// CloseIdleConnections closes the client's idle keep-alive connections.
func (c *Client) CloseIdleConnections() { c.http.CloseIdleConnections() }

// Call is a WebRTC call created through the unified interface.
type Call struct {
	// ID is the call id ("rtc_…"), from the Location header.
	ID string
	// AnswerSDP is the answer to hand back to the browser.
	AnswerSDP string
}

// CreateCall posts the browser's SDP offer with the session config to
// POST /v1/realtime/calls (the SDK's Calls.New: multipart parts "sdp" and
// "session"), authenticated with the server key, and returns the answer
// and the call id.
func (c *Client) CreateCall(ctx context.Context, offer string, sess SessionConfig) (Call, error) {
	if c.baseErr != nil {
		return Call{}, fmt.Errorf("create call: %w", c.baseErr)
	}
	p, err := sdkSession(sess)
	if err != nil {
		return Call{}, fmt.Errorf("create call: %w", err)
	}
	resp, err := c.sdk.Calls.New(ctx, oairt.CallNewParams{Sdp: offer, Session: p})
	if err != nil {
		return Call{}, fmt.Errorf("create call: %w", c.apiError(err))
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, maxBody))
	if err != nil {
		return Call{}, fmt.Errorf("create call: read answer (%d): %w", resp.StatusCode, err)
	}
	id := callIDFromLocation(resp.Header.Get("Location"))
	if id == "" {
		return Call{}, fmt.Errorf("create call: answer has no call id in Location %q", resp.Header.Get("Location"))
	}
	if err := checkAnswer(string(data)); err != nil {
		return Call{}, fmt.Errorf("create call %s: %w", id, err)
	}
	c.log.Debug("realtime call created", "call_id", id)
	return Call{ID: id, AnswerSDP: string(data)}, nil
}

// sdkSession converts a session config to the SDK's request type. The SDK
// decodes the same GA JSON, so nothing is lost on the way.
func sdkSession(sess SessionConfig) (oairt.RealtimeSessionCreateRequestParam, error) {
	var p oairt.RealtimeSessionCreateRequestParam
	raw, err := json.Marshal(sess)
	if err != nil {
		return p, fmt.Errorf("encode session: %w", err)
	}
	if err := p.UnmarshalJSON(raw); err != nil {
		return p, fmt.Errorf("encode session for the SDK: %w", err)
	}
	return p, nil
}

// callIDFromLocation returns the last path segment of a Location such as
// /v1/realtime/calls/rtc_123.
func callIDFromLocation(loc string) string {
	if loc == "" {
		return ""
	}
	u, err := url.Parse(loc)
	if err != nil {
		return ""
	}
	id := path.Base(strings.TrimSuffix(u.Path, "/"))
	if id == "." || id == "/" || id == "calls" {
		return ""
	}
	return id
}

// checkAnswer makes sure what came back is SDP, not an error body a
// browser would fail to parse.
func checkAnswer(answer string) error {
	if !strings.HasPrefix(strings.TrimLeft(answer, " \r\n"), "v=0") {
		return errors.New("answer is not SDP")
	}
	return nil
}

// ClientSecret is an ephemeral key a browser uses to connect to the
// Realtime API directly.
type ClientSecret struct {
	// Value is the secret ("ek_…"). Hand it to the browser; never log it.
	Value     string
	ExpiresAt time.Time
	// SessionID is the id of the session configured by the secret.
	SessionID string
	// Model is the session's model.
	Model string
}

// CreateClientSecret mints an ephemeral client secret bound to sess:
// POST /v1/realtime/client_secrets (the SDK's ClientSecrets.New). ttl is
// clamped to the API's 10 s–2 h; zero means the API's default of 10
// minutes.
func (c *Client) CreateClientSecret(ctx context.Context, sess SessionConfig, ttl time.Duration) (ClientSecret, error) {
	if c.baseErr != nil {
		return ClientSecret{}, fmt.Errorf("create client secret: %w", c.baseErr)
	}
	p, err := sdkSession(sess)
	if err != nil {
		return ClientSecret{}, fmt.Errorf("create client secret: %w", err)
	}
	req := oairt.ClientSecretNewParams{Session: oairt.ClientSecretNewParamsSessionUnion{OfRealtime: &p}}
	if ttl > 0 {
		secs := int64(min(max(ttl, 10*time.Second), 2*time.Hour) / time.Second)
		req.ExpiresAfter = oairt.ClientSecretNewParamsExpiresAfter{Anchor: "created_at", Seconds: param.NewOpt(secs)}
	}
	ans, err := c.sdk.ClientSecrets.New(ctx, req)
	if err != nil {
		return ClientSecret{}, fmt.Errorf("create client secret: %w", c.apiError(err))
	}
	if ans.Value == "" {
		return ClientSecret{}, errors.New("create client secret: answer has no value")
	}
	model := string(ans.Session.Model)
	if model == "" {
		model = sess.Model
	}
	return ClientSecret{
		Value:     ans.Value,
		ExpiresAt: time.Unix(ans.ExpiresAt, 0).UTC(),
		SessionID: ans.Session.ID,
		Model:     model,
	}, nil
}

// Hangup ends a call: POST /v1/realtime/calls/{id}/hangup (the SDK's
// Calls.Hangup). A call the API no longer knows yields an *APIError with
// status 404.
func (c *Client) Hangup(ctx context.Context, callID string) error {
	if c.baseErr != nil {
		return fmt.Errorf("hang up call %s: %w", callID, c.baseErr)
	}
	if err := c.sdk.Calls.Hangup(ctx, callID); err != nil {
		return fmt.Errorf("hang up call %s: %w", callID, c.apiError(err))
	}
	c.log.Debug("realtime call hung up", "call_id", callID)
	return nil
}

// apiError turns an SDK error into one that carries no request: the SDK's
// *Error holds the request, whose Authorization header is the server key,
// and its response; neither may escape this package. An API answer
// becomes an *APIError; a transport failure keeps its cause without the
// URL.
func (c *Client) apiError(err error) error {
	var e *oairt.Error
	if errors.As(err, &e) {
		out := &APIError{Status: e.StatusCode, Type: e.Type, Code: e.Code, Message: redactKey(e.Message, c.apiKey), Param: e.Param}
		if out.Message == "" && out.Type == "" {
			out.Message = http.StatusText(e.StatusCode)
		}
		return out
	}
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return redactURLError(err)
	}
	return errors.New(redactKey(redactURLError(err).Error(), c.apiKey))
}

// redactKey replaces every occurrence of key in s.
func redactKey(s, key string) string {
	if key == "" {
		return s
	}
	return strings.ReplaceAll(s, key, "[redacted]")
}

// redactURLError drops the URL an *url.Error carries (it repeats what the
// caller already says) and keeps its cause.
func redactURLError(err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		return ue.Err
	}
	return err
}

// APIError is a non-2xx answer of the Realtime API, parsed from its error
// envelope {"error":{"message","type","param","code"}}.
type APIError struct {
	Status  int
	Type    string
	Code    string
	Message string
	Param   string
}

// Error implements error.
func (e *APIError) Error() string {
	msg := fmt.Sprintf("realtime API answered %d", e.Status)
	if e.Code != "" {
		msg += " " + e.Code
	} else if e.Type != "" {
		msg += " " + e.Type
	}
	if e.Message != "" {
		msg += ": " + e.Message
	}
	return msg
}

// Error types and codes of the API that the control plane and its fake
// use.
const (
	TypeInvalidRequest  = "invalid_request_error"
	TypeAuthentication  = "authentication_error"
	TypeServer          = "server_error"
	TypeTranscription   = "transcription_error"
	CodeInvalidOffer    = "invalid_offer"
	CodeCallNotFound    = "call_id_not_found"
	CodeBetaShape       = "beta_api_shape_disabled"
	CodeInvalidAPIKey   = "invalid_api_key"
	CodeUnknownParam    = "unknown_parameter"
	CodeMissingParam    = "missing_required_parameter"
	CodeInvalidValue    = "invalid_value"
	CodeUnintelligible  = "audio_unintelligible"
	CodeUnknownEvent    = "unknown_event"
	CodeInvalidClientEv = "invalid_event"
)

// parseAPIError builds the *APIError of a non-2xx answer. A body that is
// not the error envelope yields the status text; it is never echoed raw.
func parseAPIError(status int, body []byte) *APIError {
	var env struct {
		Error struct {
			Message string          `json:"message"`
			Type    string          `json:"type"`
			Param   json.RawMessage `json:"param"`
			Code    json.RawMessage `json:"code"`
		} `json:"error"`
	}
	e := &APIError{Status: status}
	if json.Unmarshal(bytes.TrimSpace(body), &env) == nil && (env.Error.Message != "" || env.Error.Type != "") {
		e.Message, e.Type = env.Error.Message, env.Error.Type
		e.Code = rawString(env.Error.Code)
		e.Param = rawString(env.Error.Param)
		return e
	}
	e.Message = http.StatusText(status)
	return e
}

// rawString returns a JSON string's value, a number's text, or "" for
// null and anything else.
func rawString(raw json.RawMessage) string {
	var s string
	if json.Unmarshal(raw, &s) == nil {
		return s
	}
	var n json.Number
	if json.Unmarshal(raw, &n) == nil {
		return n.String()
	}
	return ""
}

// IsAPIError reports whether err holds an *APIError with the given HTTP
// status and, when code is not empty, that code.
func IsAPIError(err error, status int, code string) bool {
	var e *APIError
	if !errors.As(err, &e) {
		return false
	}
	return e.Status == status && (code == "" || e.Code == code)
}
