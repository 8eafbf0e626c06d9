// Package controlclient is what a session VM uses to call the controller's
// internal API (docs/architecture.md, "Contract"; routes and wire types in
// pkg/session/wire.go): fetch its config, report ready, heartbeat, post
// transcript batches and report that it ended.
//
// Every call carries the session's bearer token and is retried on network
// errors, 429 and 5xx answers (honouring Retry-After), with a bounded
// number of attempts; 4xx answers are never retried. A 409 answer means
// the session is no longer live (errors.Is(err, ErrNotLive)): the VM must
// stop and exit. The token never appears in a log line or an error string.
package controlclient

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"net/url"
	"strconv"
	"time"

	"github.com/hashicorp/go-retryablehttp"

	"github.com/interviewvm/controlplane/pkg/session"
)

// Defaults of Config.
const (
	DefaultRetryMax      = 4
	DefaultRetryWaitMin  = 250 * time.Millisecond
	DefaultRetryWaitMax  = 2 * time.Second
	DefaultMaxRetryAfter = 30 * time.Second
	DefaultTimeout       = 10 * time.Second
)

// maxBody bounds how much of an answer the client reads.
const maxBody = 1 << 20

// ErrNotLive is matched (errors.Is) by the error of any call the controller
// answered with 409: the session is no longer live and the VM must exit.
var ErrNotLive = errors.New("session is no longer live")

// ErrUnauthorized is matched (errors.Is) by the error of any call the
// controller answered with 401: the session token was rejected.
var ErrUnauthorized = errors.New("session token rejected")

// Config configures a Client.
type Config struct {
	// BaseURL is the controller's internal URL, e.g. http://10.0.0.1:8080.
	BaseURL string
	// SessionID is the interview session this VM serves.
	SessionID string
	// Token is the session's bearer token. It is sent in the Authorization
	// header only and never logged.
	Token string
	// Logger receives the retry library's debug and error lines; nil
	// disables them.
	Logger *slog.Logger
	// HTTPClient is used for each attempt. Default: a client with its own
	// transport and a per-attempt Timeout.
	HTTPClient *http.Client
	// Timeout bounds each attempt of the default HTTPClient. Default 10s.
	Timeout time.Duration

	// RetryMax is how many times a failed attempt is retried. Zero means
	// DefaultRetryMax; negative means never retry.
	RetryMax int
	// RetryWaitMin and RetryWaitMax bound the exponential backoff between
	// attempts. Defaults 250ms and 2s.
	RetryWaitMin time.Duration
	RetryWaitMax time.Duration
	// MaxRetryAfter caps the wait a Retry-After header may ask for.
	// Default 30s. The caller's context bounds every wait too.
	MaxRetryAfter time.Duration
}

// Client calls the controller's internal API for one session. It is safe
// for concurrent use.
type Client struct {
	base          *url.URL
	baseErr       error
	sessionID     string
	token         string
	http          *http.Client
	rc            *retryablehttp.Client
	maxRetryAfter time.Duration
}

// New returns a Client. An invalid BaseURL is reported by every call.
func New(cfg Config) *Client {
	c := &Client{
		sessionID:     cfg.SessionID,
		token:         cfg.Token,
		http:          cfg.HTTPClient,
		maxRetryAfter: cfg.MaxRetryAfter,
	}
	c.base, c.baseErr = parseBase(cfg.BaseURL)
	if c.http == nil {
		timeout := cfg.Timeout
		if timeout <= 0 {
			timeout = DefaultTimeout
		}
		transport := http.DefaultTransport
		if t, ok := http.DefaultTransport.(*http.Transport); ok {
			transport = t.Clone()
		}
		c.http = &http.Client{Transport: transport, Timeout: timeout}
	}
	if c.maxRetryAfter <= 0 {
		c.maxRetryAfter = DefaultMaxRetryAfter
	}
	rc := &retryablehttp.Client{
		HTTPClient:   c.http,
		RetryMax:     cfg.RetryMax,
		RetryWaitMin: cfg.RetryWaitMin,
		RetryWaitMax: cfg.RetryWaitMax,
		CheckRetry:   checkRetry,
		Backoff:      c.backoff,
		// Hand back the last answer once retries are exhausted, so a final
		// 5xx becomes an *Error with the controller's code and message.
		ErrorHandler: retryablehttp.PassthroughErrorHandler,
	}
	switch {
	case rc.RetryMax == 0:
		rc.RetryMax = DefaultRetryMax
	case rc.RetryMax < 0:
		rc.RetryMax = 0
	}
	if rc.RetryWaitMin <= 0 {
		rc.RetryWaitMin = DefaultRetryWaitMin
	}
	if rc.RetryWaitMax <= 0 {
		rc.RetryWaitMax = DefaultRetryWaitMax
	}
	if rc.RetryWaitMax < rc.RetryWaitMin {
		rc.RetryWaitMax = rc.RetryWaitMin
	}
	// Never the library's default stderr logger. A nil *slog.Logger must
	// stay a nil interface, or the library would call methods on it.
	if cfg.Logger != nil {
		rc.Logger = cfg.Logger.With("component", "controlclient")
	}
	c.rc = rc
	return c
}

func parseBase(raw string) (*url.URL, error) {
	if raw == "" {
		return nil, errors.New("controller URL is empty")
	}
	u, err := url.Parse(raw)
	if err != nil {
		return nil, fmt.Errorf("parse controller URL: %w", err)
	}
	if u.Scheme != "http" && u.Scheme != "https" || u.Host == "" {
		return nil, fmt.Errorf("controller URL %q: want http(s)://host[:port]", u.Redacted())
	}
	return u, nil
}

// CloseIdleConnections closes the client's idle keep-alive connections.
func (c *Client) CloseIdleConnections() { c.http.CloseIdleConnections() }

// Config fetches the VM's configuration: GET …/config.
func (c *Client) Config(ctx context.Context) (session.VMConfig, error) {
	var cfg session.VMConfig
	if err := c.call(ctx, http.MethodGet, "config", nil, &cfg); err != nil {
		return session.VMConfig{}, fmt.Errorf("get config: %w", err)
	}
	return cfg, nil
}

// Ready reports that the VM serves its endpoints: POST …/ready.
func (c *Client) Ready(ctx context.Context, req session.ReadyRequest) error {
	if err := c.call(ctx, http.MethodPost, "ready", req, nil); err != nil {
		return fmt.Errorf("post ready: %w", err)
	}
	return nil
}

// Heartbeat sends the VM's periodic report and returns the controller's
// answer: POST …/heartbeat.
func (c *Client) Heartbeat(ctx context.Context, hb session.Heartbeat) (session.HeartbeatAnswer, error) {
	var ans session.HeartbeatAnswer
	if err := c.call(ctx, http.MethodPost, "heartbeat", hb, &ans); err != nil {
		return session.HeartbeatAnswer{}, fmt.Errorf("post heartbeat: %w", err)
	}
	return ans, nil
}

// Transcript posts a batch of segments and returns the highest contiguous
// seq the controller stored: POST …/transcript. Posting the same segments
// again is safe: the controller stores them idempotently.
func (c *Client) Transcript(ctx context.Context, batch session.TranscriptBatch) (session.TranscriptAck, error) {
	var ack session.TranscriptAck
	if err := c.call(ctx, http.MethodPost, "transcript", batch, &ack); err != nil {
		return session.TranscriptAck{}, fmt.Errorf("post transcript: %w", err)
	}
	return ack, nil
}

// Ended reports the VM's last word: POST …/ended.
func (c *Client) Ended(ctx context.Context, e session.Ended) error {
	if err := c.call(ctx, http.MethodPost, "ended", e, nil); err != nil {
		return fmt.Errorf("post ended: %w", err)
	}
	return nil
}

// call performs one API call with retries. in, when non-nil, is sent as
// JSON; out, when non-nil, receives the JSON answer.
func (c *Client) call(ctx context.Context, method, route string, in, out any) error {
	if c.baseErr != nil {
		return c.baseErr
	}
	u := c.base.JoinPath("internal/v1/sessions", c.sessionID, route)
	var body any // nil, or []byte: retryablehttp rewinds it on every attempt
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return fmt.Errorf("encode request: %w", err)
		}
		body = b
	}
	req, err := retryablehttp.NewRequestWithContext(ctx, method, u.String(), body)
	if err != nil {
		return fmt.Errorf("build request: %w", err)
	}
	req.Header.Set("Authorization", "Bearer "+c.token)
	req.Header.Set("Accept", "application/json")
	req.Header.Set("User-Agent", "sessionvm")
	if in != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := c.rc.Do(req)
	if err != nil {
		if resp != nil {
			resp.Body.Close()
		}
		return err
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, maxBody))
	if err != nil {
		return fmt.Errorf("read answer (%d): %w", resp.StatusCode, err)
	}
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		return parseError(resp.StatusCode, data)
	}
	if out == nil {
		return nil
	}
	if err := json.Unmarshal(data, out); err != nil {
		return fmt.Errorf("decode answer: %w", err)
	}
	return nil
}

// checkRetry retries network errors the library deems recoverable, 429 and
// 5xx (except 501), and nothing else: never a 4xx, never once the caller's
// context is done.
func checkRetry(ctx context.Context, resp *http.Response, err error) (bool, error) {
	if ctx.Err() != nil {
		return false, ctx.Err()
	}
	if err != nil {
		return retryablehttp.ErrorPropagatedRetryPolicy(ctx, resp, err)
	}
	switch {
	case resp.StatusCode == http.StatusTooManyRequests:
		return true, nil
	case resp.StatusCode >= 500 && resp.StatusCode != http.StatusNotImplemented:
		return true, nil
	}
	return false, nil
}

// backoff waits what a 429 or 5xx answer's Retry-After asks (at most
// maxRetryAfter), else an exponential backoff between min and max with up
// to 25% jitter.
func (c *Client) backoff(minWait, maxWait time.Duration, attempt int, resp *http.Response) time.Duration {
	if resp != nil && (resp.StatusCode == http.StatusTooManyRequests || resp.StatusCode >= 500) {
		if d, ok := retryAfter(resp.Header.Get("Retry-After"), time.Now()); ok {
			return min(d, c.maxRetryAfter)
		}
	}
	d := minWait << min(attempt, 20)
	if d <= 0 || d > maxWait {
		d = maxWait
	}
	if j := int64(d / 4); j > 0 {
		d += time.Duration(rand.Int64N(j))
	}
	return d
}

// retryAfter parses a Retry-After header: delay-seconds or an HTTP date.
func retryAfter(v string, now time.Time) (time.Duration, bool) {
	if v == "" {
		return 0, false
	}
	if s, err := strconv.ParseInt(v, 10, 64); err == nil {
		if s < 0 {
			return 0, false
		}
		return time.Duration(min(s, 86400)) * time.Second, true
	}
	t, err := http.ParseTime(v)
	if err != nil {
		return 0, false
	}
	return max(t.Sub(now), 0), true
}

// Error is a non-2xx answer of the controller, with the code and message of
// the contract's error body {"error":{"code","message"}}. A 409 matches
// ErrNotLive and a 401 matches ErrUnauthorized under errors.Is.
type Error struct {
	Status  int
	Code    string
	Message string
}

// Error implements error.
func (e *Error) Error() string {
	msg := fmt.Sprintf("controller answered %d", e.Status)
	if e.Code != "" {
		msg += " " + e.Code
	}
	if e.Message != "" {
		msg += ": " + e.Message
	}
	return msg
}

// Is makes errors.Is(err, ErrNotLive) true for 409 answers and
// errors.Is(err, ErrUnauthorized) true for 401 answers.
func (e *Error) Is(target error) bool {
	switch target {
	case ErrNotLive:
		return e.Status == http.StatusConflict
	case ErrUnauthorized:
		return e.Status == http.StatusUnauthorized
	}
	return false
}

// parseError builds the *Error of a non-2xx answer. A body that is not the
// contract's error JSON yields the status text as message; the raw body is
// never echoed.
func parseError(status int, body []byte) *Error {
	var eb struct {
		Error struct {
			Code    string `json:"code"`
			Message string `json:"message"`
		} `json:"error"`
	}
	e := &Error{Status: status}
	if json.Unmarshal(bytes.TrimSpace(body), &eb) == nil && eb.Error.Code != "" {
		e.Code, e.Message = eb.Error.Code, eb.Error.Message
		return e
	}
	e.Code = defaultCode(status)
	e.Message = http.StatusText(status)
	return e
}

// defaultCode maps a status to the contract's error code when the answer
// carried none.
func defaultCode(status int) string {
	switch status {
	case http.StatusBadRequest:
		return session.EINVALID
	case http.StatusUnauthorized:
		return session.EUNAUTHENTICATED
	case http.StatusForbidden:
		return session.EFORBIDDEN
	case http.StatusNotFound:
		return session.ENOTFOUND
	case http.StatusConflict:
		return session.ECONFLICT
	case http.StatusRequestEntityTooLarge:
		return session.ETOOLARGE
	case http.StatusTooManyRequests:
		return session.ERATELIMITED
	case http.StatusServiceUnavailable:
		return session.EUNAVAILABLE
	}
	return session.EINTERNAL
}

// IsPermanent reports whether retrying the call that returned err cannot
// help: the session is not live, the token was rejected, or the controller
// refused the request with a 4xx other than 429. Network errors, 429, 5xx
// and context errors are not permanent.
func IsPermanent(err error) bool {
	if err == nil {
		return false
	}
	if errors.Is(err, ErrNotLive) || errors.Is(err, ErrUnauthorized) {
		return true
	}
	var e *Error
	if errors.As(err, &e) {
		return e.Status >= 400 && e.Status < 500 && e.Status != http.StatusTooManyRequests
	}
	return false
}
