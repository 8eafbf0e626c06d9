// Package flymachines is the control plane's client for the Fly.io Machines
// REST API (https://api.machines.dev/v1): create, get, list, wait, start,
// stop and destroy machines, and read or write their metadata. It speaks
// Fly's types only; adapting them to the control plane's domain is the job
// of the provider built on it.
//
// The client is built for a caller that must never end up with two
// machines for one interview:
//
//   - Reads, waits, starts, stops, destroys and metadata calls are retried
//     on network errors, 429 and 5xx, honouring Retry-After.
//   - A create is never resent once it may have reached Fly. When its
//     outcome is unknown (timeout, dropped connection, 408, 5xx) the client
//     waits briefly, lists the app's machines by the create's name and
//     recovery metadata, and returns the machine it finds; it creates again
//     only when none exists. A "name taken" answer is resolved the same way.
//   - A client-side token bucket per (action, app or machine) keeps calls
//     within Fly's documented rate limits, so bursts queue instead of
//     collecting 429s.
//
// Every error answer is logged with Fly's fly-request-id and returned as an
// *Error; match it with errors.Is against ErrNotFound, ErrNameTaken,
// ErrCapacity and the other sentinels. The API token never appears in logs
// or errors.
package flymachines

import (
	"bytes"
	"cmp"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/hashicorp/go-retryablehttp"
	"github.com/prometheus/client_golang/prometheus"
)

// DefaultBaseURL is the public Machines API endpoint. Inside Fly's private
// network http://_api.internal:4280 also works.
const DefaultBaseURL = "https://api.machines.dev"

// Operation names, used as metric labels and rate-limit scopes.
const (
	opCreate         = "create"
	opGet            = "get"
	opList           = "list"
	opWait           = "wait"
	opStart          = "start"
	opStop           = "stop"
	opDestroy        = "destroy"
	opGetMetadata    = "get_metadata"
	opSetMetadata    = "set_metadata"
	opDeleteMetadata = "delete_metadata"
)

// Config configures a Client. Only Token is required.
type Config struct {
	// BaseURL defaults to DefaultBaseURL.
	BaseURL string
	// Token is a Fly API token. A value beginning "FlyV1 " (as printed by
	// `fly tokens create`) is sent verbatim; a bare macaroon (fm1r_, fm1a_,
	// fm2_) gets the "FlyV1 " scheme, as Fly's own client does; anything
	// else is sent as "Bearer <token>".
	Token string
	// Logger receives the client's logs (and go-retryablehttp's). Nil
	// discards them.
	Logger *slog.Logger
	// HTTPClient is the transport to use; its Transport is wrapped (rate
	// limiting, metrics) and a cookie jar is added if it has none, in a
	// copy: the value passed in is not modified. Nil builds a fresh one.
	HTTPClient *http.Client
	// UserAgent defaults to "interviewvm-controlplane".
	UserAgent string

	// RetryMax is how many times an idempotent call is retried (default
	// 4; negative disables retries).
	RetryMax int
	// RetryWaitMin and RetryWaitMax bound the exponential backoff between
	// retries (defaults 250 ms and 5 s). A Retry-After header wins.
	RetryWaitMin, RetryWaitMax time.Duration
	// AttemptTimeout bounds one HTTP attempt (default 30 s); waits get
	// their own server-side timeout plus a margin instead.
	AttemptTimeout time.Duration

	// ActionLimit is Fly's limit for each action per app or machine:
	// default 1/s, burst 3, as Fly documents.
	ActionLimit Limit
	// GetLimit is Fly's limit for getting one machine: default 5/s, burst
	// 10.
	GetLimit Limit
	// RateMargin is how much of each bucket's refill the client keeps in
	// hand (default DefaultRateMargin, 200 ms: 0.2 of a create at 1/s,
	// one get at 5/s; negative: none). It absorbs the difference between
	// two requests' network delays, so a queued request does not reach
	// Fly a moment too early and get a 429; it costs one margin of
	// waiting per queue.
	RateMargin time.Duration
	// DisableRateLimit turns the client-side limiter off.
	DisableRateLimit bool

	// CreateLookupDelay is the first pause before looking up a create whose
	// answer was lost (default 500 ms: Fly's state takes a moment to
	// propagate); it doubles between lookups, up to 5 s.
	CreateLookupDelay time.Duration
	// CreateLookups is how many lookups are made before deciding the
	// machine is absent (default 3).
	CreateLookups int
	// CreateAttempts bounds how many times a create is sent after finding
	// the machine absent (default 3).
	CreateAttempts int

	// Registerer receives the client's metrics; nil keeps them private.
	Registerer prometheus.Registerer
}

// Client calls the Machines API. It is safe for concurrent use.
type Client struct {
	baseURL    string
	authHeader string
	userAgent  string
	log        *slog.Logger
	http       *http.Client
	retrying   *retryablehttp.Client
	metrics    *metrics

	attemptTimeout time.Duration
	lookupDelay    time.Duration
	lookups        int
	createAttempts int
}

// New returns a Client for cfg.
func New(cfg Config) (*Client, error) {
	if strings.TrimSpace(cfg.Token) == "" {
		return nil, errors.New("fly machines client: token is required")
	}
	base := cfg.BaseURL
	if base == "" {
		base = DefaultBaseURL
	}
	u, err := url.Parse(base)
	if err != nil || u.Scheme == "" || u.Host == "" {
		return nil, fmt.Errorf("fly machines client: invalid base URL %q", base)
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	log = log.With("component", "flymachines")
	m, err := newMetrics(cfg.Registerer)
	if err != nil {
		return nil, err
	}
	c := &Client{
		baseURL:        strings.TrimRight(u.String(), "/"),
		authHeader:     authorization(cfg.Token),
		userAgent:      cmp.Or(cfg.UserAgent, "interviewvm-controlplane"),
		log:            log,
		metrics:        m,
		attemptTimeout: cmp.Or(cfg.AttemptTimeout, 30*time.Second),
		lookupDelay:    cmp.Or(cfg.CreateLookupDelay, 500*time.Millisecond),
		lookups:        cmp.Or(cfg.CreateLookups, 3),
		createAttempts: cmp.Or(cfg.CreateAttempts, 3),
	}

	var hc http.Client
	if cfg.HTTPClient != nil {
		hc = *cfg.HTTPClient
	}
	if hc.Transport == nil {
		hc.Transport = http.DefaultTransport.(*http.Transport).Clone()
	}
	if hc.Jar == nil {
		// Fly answers with an affinity cookie so follow-up calls reach the
		// API node that already knows about a just-changed machine.
		jar, err := cookiejar.New(nil)
		if err != nil {
			return nil, fmt.Errorf("fly machines client: cookie jar: %w", err)
		}
		hc.Jar = jar
	}
	var lim *limiter
	if !cfg.DisableRateLimit {
		action := cfg.ActionLimit
		if action.Rate == 0 {
			action = Limit{Rate: 1, Burst: 3}
		}
		get := cfg.GetLimit
		if get.Rate == 0 {
			get = Limit{Rate: 5, Burst: 10}
		}
		margin := cfg.RateMargin
		if margin == 0 {
			margin = DefaultRateMargin
		}
		lim = newLimiter(max1(action), max1(get), margin)
	}
	hc.Transport = &transport{next: hc.Transport, limiter: lim, metrics: m, log: log}
	c.http = &hc

	retryMax := cfg.RetryMax
	switch {
	case retryMax == 0:
		retryMax = 4
	case retryMax < 0:
		retryMax = 0
	}
	rc := &retryablehttp.Client{
		HTTPClient:   c.http,
		Logger:       retryLogger{log.With("source", "retryablehttp")}, // never its stderr default
		RetryWaitMin: cmp.Or(cfg.RetryWaitMin, 250*time.Millisecond),
		RetryWaitMax: cmp.Or(cfg.RetryWaitMax, 5*time.Second),
		RetryMax:     retryMax,
		CheckRetry:   checkRetry,
		Backoff:      backoff,
		ErrorHandler: retryablehttp.PassthroughErrorHandler,
		RequestLogHook: func(_ retryablehttp.Logger, req *http.Request, attempt int) {
			if attempt == 0 {
				return
			}
			ci := callFrom(req.Context())
			m.retries.WithLabelValues(ci.op).Inc()
			log.Debug("retrying fly machines api call", "op", ci.op, "attempt", attempt)
		},
	}
	c.retrying = rc
	return c, nil
}

// Close releases idle connections. The client must not be used afterwards.
func (c *Client) Close() error {
	c.http.CloseIdleConnections()
	return nil
}

func max1(l Limit) Limit {
	if l.Burst < 1 {
		l.Burst = 1
	}
	return l
}

// authorization returns the Authorization header value for token.
func authorization(token string) string {
	t := strings.TrimSpace(token)
	switch {
	case strings.HasPrefix(t, "FlyV1 "):
		return t
	case strings.HasPrefix(t, "Bearer "):
		return t
	case strings.HasPrefix(t, "fm1r_"), strings.HasPrefix(t, "fm1a_"), strings.HasPrefix(t, "fm2_"):
		return "FlyV1 " + t
	default:
		return "Bearer " + t
	}
}

// retryPolicy says which failures of a call may be retried.
type retryPolicy int

const (
	// retryIdempotent: network errors, 408, 429, 5xx.
	retryIdempotent retryPolicy = iota
	// retryWait: like retryIdempotent but 408 is an answer ("not yet").
	retryWait
	// retryUnsent: only failures that prove the request was not processed:
	// connection never established, or 429. Used for create.
	retryUnsent
)

// call describes one API call to the transport and the retry policy; it
// travels in the request's context.
type call struct {
	op      string
	id      string // rate-limit scope: machine id, or app for create/list
	policy  retryPolicy
	timeout time.Duration // per attempt
	// low yields to every other call of its rate-limit bucket.
	low bool
}

type callKey struct{}

func withCall(ctx context.Context, ci call) context.Context {
	return context.WithValue(ctx, callKey{}, ci)
}

func callFrom(ctx context.Context) call {
	ci, _ := ctx.Value(callKey{}).(call)
	if ci.op == "" {
		ci.op = "unknown"
	}
	return ci
}

// request is one API call.
type request struct {
	op     string
	id     string
	method string
	path   string // under /v1, already escaped
	query  url.Values
	body   any
	out    any
	policy retryPolicy
	// timeout overrides the per-attempt timeout.
	timeout time.Duration
	// quiet lists statuses that are expected answers, logged at debug.
	quiet []int
	// low: see call.low.
	low bool
}

const maxErrorBody = 8 << 10

// do sends r and decodes a 2xx answer into r.out. Other answers become an
// *Error, logged with Fly's request id.
func (c *Client) do(ctx context.Context, r request) error {
	u := c.baseURL + "/v1" + r.path
	if len(r.query) > 0 {
		u += "?" + r.query.Encode()
	}
	var body any
	if r.body != nil {
		b, err := json.Marshal(r.body)
		if err != nil {
			return fmt.Errorf("encode %s request: %w", r.op, err)
		}
		body = b
	}
	ctx = withCall(ctx, call{op: r.op, id: r.id, policy: r.policy, timeout: cmp.Or(r.timeout, c.attemptTimeout), low: r.low})
	req, err := retryablehttp.NewRequestWithContext(ctx, r.method, u, body)
	if err != nil {
		return fmt.Errorf("build %s request: %w", r.op, err)
	}
	req.Header.Set("Authorization", c.authHeader)
	req.Header.Set("User-Agent", c.userAgent)
	req.Header.Set("Accept", "application/json")
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}

	resp, err := c.retrying.Do(req)
	if err != nil {
		c.log.LogAttrs(ctx, slog.LevelWarn, "fly machines api call failed",
			slog.String("op", r.op), slog.String("method", r.method), slog.String("path", r.path),
			slog.String("error", err.Error()))
		return err // a *url.Error: it names the method and URL
	}
	defer resp.Body.Close()
	reqID := resp.Header.Get("Fly-Request-Id")

	if resp.StatusCode >= 200 && resp.StatusCode < 300 {
		if r.out == nil {
			_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 1<<20))
			return nil
		}
		data, err := io.ReadAll(io.LimitReader(resp.Body, 32<<20))
		if err != nil {
			return fmt.Errorf("%s %s: read answer [fly-request-id %s]: %w", r.method, r.path, reqID, err)
		}
		if len(bytes.TrimSpace(data)) == 0 {
			return nil
		}
		if err := json.Unmarshal(data, r.out); err != nil {
			return fmt.Errorf("%s %s: decode answer [fly-request-id %s]: %w", r.method, r.path, reqID, err)
		}
		return nil
	}

	data, _ := io.ReadAll(io.LimitReader(resp.Body, maxErrorBody))
	e := &Error{
		Op:         r.op,
		Method:     r.method,
		Path:       r.path,
		StatusCode: resp.StatusCode,
		Body:       string(data),
		RequestID:  reqID,
	}
	var eb errorBody
	if json.Unmarshal(data, &eb) == nil {
		e.Status = eb.Status
		e.Message = cmp.Or(eb.Error, eb.Message)
	} else {
		e.Message = truncate(strings.TrimSpace(string(data)), 512)
	}
	level := slog.LevelWarn
	for _, s := range r.quiet {
		if s == resp.StatusCode {
			level = slog.LevelDebug
		}
	}
	c.log.LogAttrs(ctx, level, "fly machines api error",
		slog.String("op", r.op), slog.String("method", r.method), slog.String("path", r.path),
		slog.Int("status", resp.StatusCode), slog.String("fly_status", e.Status),
		slog.String("message", e.Message), slog.String("fly_request_id", reqID))
	return e
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}

// checkRetry is the go-retryablehttp policy. It never lets a create be
// resent once it may have reached Fly.
func checkRetry(ctx context.Context, resp *http.Response, err error) (bool, error) {
	if ctx.Err() != nil {
		return false, ctx.Err()
	}
	ci := callFrom(ctx)
	if err != nil {
		var rl *rateLimitError
		if errors.As(err, &rl) {
			return false, nil // queueing longer cannot help
		}
		if ci.policy == retryUnsent {
			return notSent(err), nil
		}
		return retryableNetError(err), nil
	}
	switch code := resp.StatusCode; {
	case code == http.StatusTooManyRequests:
		// Fly's limiter refuses the request before doing anything, so
		// even a create may be sent again.
		return true, nil
	case ci.policy == retryUnsent:
		return false, nil
	case code == http.StatusRequestTimeout:
		return ci.policy == retryIdempotent, nil
	case code >= 500 && code != http.StatusNotImplemented:
		return true, nil
	}
	return false, nil
}

// notSent reports whether err proves the request never reached the server:
// the connection could not be established.
func notSent(err error) bool {
	var dns *net.DNSError
	if errors.As(err, &dns) {
		return true
	}
	var op *net.OpError
	return errors.As(err, &op) && op.Op == "dial"
}

// retryableNetError reports whether a transport error may be transient.
func retryableNetError(err error) bool {
	var (
		unknownAuthority x509.UnknownAuthorityError
		certInvalid      x509.CertificateInvalidError
		hostname         x509.HostnameError
		verify           *tls.CertificateVerificationError
	)
	switch {
	case errors.As(err, &unknownAuthority), errors.As(err, &certInvalid),
		errors.As(err, &hostname), errors.As(err, &verify):
		return false
	case errors.Is(err, context.Canceled):
		return false
	}
	return true
}

// backoff honours Retry-After on 429 and 503 and otherwise waits an
// exponentially growing, jittered time between min and max.
func backoff(minWait, maxWait time.Duration, attempt int, resp *http.Response) time.Duration {
	if resp != nil && (resp.StatusCode == http.StatusTooManyRequests || resp.StatusCode == http.StatusServiceUnavailable) {
		if d, ok := retryAfter(resp.Header.Get("Retry-After"), time.Now()); ok {
			return d
		}
	}
	d := minWait
	for i := 0; i < attempt && d < maxWait; i++ {
		d *= 2
	}
	d = min(d, maxWait)
	if d <= 0 {
		return 0
	}
	// Full jitter on the upper half keeps a herd of retries apart.
	return d/2 + rand.N(d/2+1)
}

// retryAfter parses a Retry-After value: seconds or an HTTP date.
func retryAfter(v string, now time.Time) (time.Duration, bool) {
	v = strings.TrimSpace(v)
	if v == "" {
		return 0, false
	}
	if s, err := strconv.Atoi(v); err == nil {
		if s < 0 {
			return 0, false
		}
		return time.Duration(s) * time.Second, true
	}
	t, err := http.ParseTime(v)
	if err != nil {
		return 0, false
	}
	return max(t.Sub(now), 0), true
}

// transport rate-limits, times out and measures every attempt.
type transport struct {
	next    http.RoundTripper
	limiter *limiter
	metrics *metrics
	log     *slog.Logger
}

func (t *transport) RoundTrip(req *http.Request) (*http.Response, error) {
	ci := callFrom(req.Context())
	if t.limiter != nil && ci.id != "" {
		waited, err := t.limiter.wait(req.Context(), ci.op, ci.id, ci.low)
		if err != nil {
			return nil, &rateLimitError{op: ci.op, err: err}
		}
		if waited > time.Millisecond {
			t.metrics.limitWaits.WithLabelValues(ci.op).Inc()
			t.metrics.limitWaitSecs.WithLabelValues(ci.op).Observe(waited.Seconds())
			t.log.Debug("fly machines api call queued by rate limiter", "op", ci.op, "waited", waited)
		}
	}
	ctx, cancel := req.Context(), context.CancelFunc(func() {})
	if ci.timeout > 0 {
		ctx, cancel = context.WithTimeout(ctx, ci.timeout)
		req = req.WithContext(ctx)
	}
	start := time.Now()
	resp, err := t.next.RoundTrip(req)
	t.metrics.duration.WithLabelValues(ci.op).Observe(time.Since(start).Seconds())
	if err != nil {
		cancel()
		t.metrics.requests.WithLabelValues(ci.op, "error").Inc()
		return nil, err
	}
	t.metrics.requests.WithLabelValues(ci.op, strconv.Itoa(resp.StatusCode)).Inc()
	if resp.StatusCode >= 400 {
		// Every error answer, including those retried away, with the id
		// Fly support asks for. The final one is logged again by do.
		level := slog.LevelDebug
		if resp.StatusCode == http.StatusTooManyRequests || resp.StatusCode >= 500 {
			level = slog.LevelInfo
		}
		t.log.LogAttrs(req.Context(), level, "fly machines api answered an error",
			slog.String("op", ci.op), slog.String("method", req.Method), slog.String("path", req.URL.Path),
			slog.Int("status", resp.StatusCode), slog.String("fly_request_id", resp.Header.Get("Fly-Request-Id")))
	}
	resp.Body = &cancelBody{ReadCloser: resp.Body, cancel: cancel}
	return resp, nil
}

// CloseIdleConnections lets http.Client.CloseIdleConnections reach the
// wrapped transport.
func (t *transport) CloseIdleConnections() {
	if c, ok := t.next.(interface{ CloseIdleConnections() }); ok {
		c.CloseIdleConnections()
	}
}

// retryLogger hands go-retryablehttp's logs to slog at debug level: the
// client logs outcomes itself, with Fly's request id, at the right level.
type retryLogger struct{ l *slog.Logger }

func (r retryLogger) Error(msg string, kv ...any) { r.l.Debug(msg, kv...) }
func (r retryLogger) Warn(msg string, kv ...any)  { r.l.Debug(msg, kv...) }
func (r retryLogger) Info(msg string, kv ...any)  { r.l.Debug(msg, kv...) }
func (r retryLogger) Debug(msg string, kv ...any) { r.l.Debug(msg, kv...) }

// cancelBody ends an attempt's context once its answer has been read.
type cancelBody struct {
	io.ReadCloser
	cancel context.CancelFunc
}

func (b *cancelBody) Close() error {
	err := b.ReadCloser.Close()
	b.cancel()
	return err
}
