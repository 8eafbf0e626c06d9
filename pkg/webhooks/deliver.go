package webhooks

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"time"
)

// DefaultTimeout bounds one delivery attempt.
const DefaultTimeout = 10 * time.Second

// DefaultMaxResponseBytes caps how much of a receiver's response is read.
const DefaultMaxResponseBytes = 4 << 10

// Endpoint is where a message goes and the secret it is signed with.
type Endpoint struct {
	ID     string
	URL    string
	Secret string
	// Disabled endpoints (a 410 earlier, or switched off) get nothing.
	Disabled bool
}

// Message is one event's message: its id (the webhook-id of every
// attempt) and its body, sent byte for byte on every attempt.
type Message struct {
	ID   string
	Body []byte
}

// Outcome classifies an attempt.
type Outcome string

// The outcomes of an attempt.
const (
	// OutcomeSuccess: the receiver answered 2xx.
	OutcomeSuccess Outcome = "success"
	// OutcomeGone: the receiver answered 410; the endpoint is disabled.
	OutcomeGone Outcome = "gone"
	// OutcomeRetry: anything else (other status, timeout, refused
	// connection, forbidden address); the message is tried again.
	OutcomeRetry Outcome = "retry"
)

// Result is what one attempt did.
type Result struct {
	Outcome Outcome
	// StatusCode is the receiver's status, 0 when none was received.
	StatusCode int
	// Response is the start of the receiver's body, at most the cap.
	Response []byte
	// Err says why the attempt did not succeed; nil on success.
	Err error
	// Duration is the attempt's wall time.
	Duration time.Duration
}

// DelivererConfig configures a Deliverer; zero values take the defaults.
type DelivererConfig struct {
	// AllowPrivate (WEBHOOK_ALLOW_PRIVATE) allows http URLs and private,
	// loopback and link-local targets: tests and local runs only.
	AllowPrivate bool
	// Timeout bounds one attempt; default DefaultTimeout.
	Timeout time.Duration
	// MaxResponseBytes caps the response body read; default
	// DefaultMaxResponseBytes.
	MaxResponseBytes int64
	// Client overrides the HTTP client (its transport must keep the
	// address checks); default NewHTTPClient(AllowPrivate, Timeout).
	Client *http.Client
	// Now is the clock for webhook-timestamp; default time.Now.
	Now func() time.Time
	// UserAgent is sent with every attempt.
	UserAgent string
}

// Deliverer makes signed delivery attempts.
type Deliverer struct {
	cfg     DelivererConfig
	client  *http.Client
	metrics *Metrics
}

// NewDeliverer returns a Deliverer; metrics may be nil.
func NewDeliverer(cfg DelivererConfig, metrics *Metrics) *Deliverer {
	if cfg.Timeout <= 0 {
		cfg.Timeout = DefaultTimeout
	}
	if cfg.MaxResponseBytes <= 0 {
		cfg.MaxResponseBytes = DefaultMaxResponseBytes
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.UserAgent == "" {
		cfg.UserAgent = "interviewvm-webhooks/1"
	}
	client := cfg.Client
	if client == nil {
		client = NewHTTPClient(cfg.AllowPrivate, cfg.Timeout)
	}
	return &Deliverer{cfg: cfg, client: client, metrics: metrics}
}

// Close closes the client's idle connections (and their goroutines).
func (d *Deliverer) Close() { d.client.CloseIdleConnections() }

// Timeout is the bound of one attempt.
func (d *Deliverer) Timeout() time.Duration { return d.cfg.Timeout }

// Deliver POSTs msg to ep once, signed with a fresh webhook-timestamp, and
// classifies the outcome. It never follows redirects and reads at most
// MaxResponseBytes of the answer.
func (d *Deliverer) Deliver(ctx context.Context, ep Endpoint, msg Message) Result {
	start := time.Now()
	res := d.attempt(ctx, ep, msg)
	res.Duration = time.Since(start)
	if d.metrics != nil {
		d.metrics.attempts.WithLabelValues(string(res.Outcome)).Observe(res.Duration.Seconds())
	}
	return res
}

func (d *Deliverer) attempt(ctx context.Context, ep Endpoint, msg Message) Result {
	retry := func(err error) Result { return Result{Outcome: OutcomeRetry, Err: err} }
	u, err := url.Parse(ep.URL)
	if err != nil {
		return retry(fmt.Errorf("%w: %w", ErrInvalidURL, err))
	}
	if u.Scheme != "https" && (u.Scheme != "http" || !d.cfg.AllowPrivate) {
		return retry(fmt.Errorf("%w: scheme %q not allowed", ErrInvalidURL, u.Scheme))
	}
	ctx, cancel := context.WithTimeout(ctx, d.cfg.Timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, ep.URL, bytes.NewReader(msg.Body))
	if err != nil {
		return retry(fmt.Errorf("build webhook request: %w", err))
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", d.cfg.UserAgent)
	if err := SetHeaders(req.Header, ep.Secret, msg.ID, d.cfg.Now(), msg.Body); err != nil {
		return retry(fmt.Errorf("sign webhook: %w", err))
	}
	resp, err := d.client.Do(req)
	if err != nil {
		return retry(fmt.Errorf("post webhook to %s: %w", u.Redacted(), err))
	}
	defer resp.Body.Close()
	body, readErr := io.ReadAll(io.LimitReader(resp.Body, d.cfg.MaxResponseBytes))
	res := Result{StatusCode: resp.StatusCode, Response: body}
	switch {
	case resp.StatusCode >= 200 && resp.StatusCode < 300:
		// The status decides; a body cut short does not undo a 2xx.
		res.Outcome = OutcomeSuccess
	case resp.StatusCode == http.StatusGone:
		res.Outcome = OutcomeGone
		res.Err = fmt.Errorf("%w: %s answered 410 Gone", ErrEndpointGone, u.Redacted())
	default:
		res.Outcome = OutcomeRetry
		res.Err = fmt.Errorf("webhook receiver %s answered %d", u.Redacted(), resp.StatusCode)
		if readErr != nil {
			res.Err = errors.Join(res.Err, fmt.Errorf("read response: %w", readErr))
		}
	}
	return res
}

// ErrEndpointGone is wrapped when a receiver answered 410.
var ErrEndpointGone = errors.New("webhook endpoint gone")
