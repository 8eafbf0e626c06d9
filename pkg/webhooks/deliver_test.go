package webhooks

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	standardwebhooks "github.com/standard-webhooks/standard-webhooks/libraries/go"
)

func newTestDeliverer(t *testing.T, cfg DelivererConfig) (*Deliverer, *Metrics) {
	t.Helper()
	m, err := NewMetrics(prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	cfg.AllowPrivate = true
	return NewDeliverer(cfg, m), m
}

func TestDeliverSuccessVerifiedByReceiver(t *testing.T) {
	secret, _ := NewSecret()
	verifier, _ := standardwebhooks.NewWebhook(secret)
	type got struct {
		body []byte
		h    http.Header
		err  error
	}
	received := make(chan got, 1)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		received <- got{body, r.Header.Clone(), verifier.Verify(body, r.Header)}
		w.WriteHeader(http.StatusNoContent)
	}))
	defer srv.Close()
	d, m := newTestDeliverer(t, DelivererConfig{})
	body, _ := NewBody(EventInterviewReady, time.Now(), map[string]string{"id": "iv_1"})
	res := d.Deliver(context.Background(), Endpoint{URL: srv.URL, Secret: secret}, Message{ID: "msg_ok", Body: body})
	if res.Outcome != OutcomeSuccess || res.StatusCode != 204 || res.Err != nil {
		t.Fatalf("Deliver = %+v", res)
	}
	g := <-received
	if g.err != nil {
		t.Fatalf("receiver's reference verifier: %v", g.err)
	}
	if !bytes.Equal(g.body, body) || g.h.Get("webhook-id") != "msg_ok" || g.h.Get("Content-Type") != "application/json" {
		t.Fatalf("receiver got body %s headers %v", g.body, g.h)
	}
	if c := testutil.CollectAndCount(m.attempts); c != 1 {
		t.Fatalf("attempt histogram series %d, want 1", c)
	}
}

func TestDeliverClassifiesStatuses(t *testing.T) {
	for _, tc := range []struct {
		status int
		want   Outcome
	}{{200, OutcomeSuccess}, {299, OutcomeSuccess}, {500, OutcomeRetry}, {503, OutcomeRetry}, {404, OutcomeRetry}, {301, OutcomeRetry}, {410, OutcomeGone}} {
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			w.WriteHeader(tc.status)
			_, _ = w.Write([]byte("answer"))
		}))
		d, _ := newTestDeliverer(t, DelivererConfig{})
		secret, _ := NewSecret()
		res := d.Deliver(context.Background(), Endpoint{URL: srv.URL, Secret: secret}, Message{ID: "msg_s", Body: []byte(`{}`)})
		srv.Close()
		if res.Outcome != tc.want || res.StatusCode != tc.status {
			t.Errorf("status %d: outcome %s (status %d), want %s", tc.status, res.Outcome, res.StatusCode, tc.want)
		}
		if (res.Err == nil) != (tc.want == OutcomeSuccess) {
			t.Errorf("status %d: err %v", tc.status, res.Err)
		}
		if tc.want == OutcomeGone && !errors.Is(res.Err, ErrEndpointGone) {
			t.Errorf("410: err %v, want ErrEndpointGone", res.Err)
		}
		if string(res.Response) != "answer" {
			t.Errorf("status %d: response %q", tc.status, res.Response)
		}
	}
}

func TestDeliverTimesOutOnHangingReceiver(t *testing.T) {
	release := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-r.Context().Done():
		case <-release:
		}
	}))
	defer srv.Close()
	defer close(release)
	d, _ := newTestDeliverer(t, DelivererConfig{Timeout: 200 * time.Millisecond})
	secret, _ := NewSecret()
	res := d.Deliver(context.Background(), Endpoint{URL: srv.URL, Secret: secret}, Message{ID: "msg_t", Body: []byte(`{}`)})
	if res.Outcome != OutcomeRetry || res.StatusCode != 0 || !errors.Is(res.Err, context.DeadlineExceeded) {
		t.Fatalf("hanging receiver: %+v, want a retry with a deadline error", res)
	}
	if NewDeliverer(DelivererConfig{}, nil).Timeout() != 10*time.Second {
		t.Fatal("default attempt timeout is not 10 s")
	}
}

// A receiver streaming a huge answer: only the cap is read, and the
// connection is dropped instead of drained (the receiver's writes fail
// long before it has written everything).
func TestDeliverReadsAtMostTheCap(t *testing.T) {
	const total = 256 << 20
	written := make(chan int64, 1)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusInternalServerError)
		chunk := bytes.Repeat([]byte("x"), 64<<10)
		var n int64
		for n < total {
			k, err := w.Write(chunk)
			n += int64(k)
			if err != nil {
				break
			}
		}
		written <- n
	}))
	defer srv.Close()
	d, _ := newTestDeliverer(t, DelivererConfig{MaxResponseBytes: 1024})
	secret, _ := NewSecret()
	res := d.Deliver(context.Background(), Endpoint{URL: srv.URL, Secret: secret}, Message{ID: "msg_b", Body: []byte(`{}`)})
	if res.Outcome != OutcomeRetry || len(res.Response) != 1024 {
		t.Fatalf("huge body: outcome %s, %d bytes kept, want a retry keeping 1024", res.Outcome, len(res.Response))
	}
	if n := <-written; n >= total {
		t.Fatalf("the receiver wrote all %d bytes: the body was drained", n)
	}
}

func TestDeliverRefusesHTTPWithoutAllowPrivate(t *testing.T) {
	secret, _ := NewSecret()
	res := NewDeliverer(DelivererConfig{}, nil).Deliver(context.Background(),
		Endpoint{URL: "http://hooks.example.com/x", Secret: secret}, Message{ID: "msg_h", Body: []byte(`{}`)})
	if res.Outcome != OutcomeRetry || !errors.Is(res.Err, ErrInvalidURL) {
		t.Fatalf("http without allowPrivate: %+v", res)
	}
}
