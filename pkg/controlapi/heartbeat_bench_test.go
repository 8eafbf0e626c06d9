package controlapi_test

import (
	"context"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/interviewvm/controlplane/pkg/controlapi"
	"github.com/interviewvm/controlplane/pkg/session"
)

// beatOnly answers every heartbeat "continue" from memory, as the
// provisioner does for a session it knows: what is left is the HTTP
// layer's own cost per heartbeat.
type beatOnly struct {
	controlapi.Lifecycle
	beats int
}

func (b *beatOnly) Heartbeat(context.Context, string, string, session.Heartbeat) (session.HeartbeatAnswer, error) {
	b.beats++
	return session.HeartbeatAnswer{Action: session.ActionContinue}, nil
}

// BenchmarkHeartbeatHandler measures the controller's HTTP handling of one
// heartbeat (routing, middleware, decoding, answer), allocations included,
// on the internal listener as a VM reaches it.
func BenchmarkHeartbeatHandler(b *testing.B) {
	lc := &beatOnly{}
	reg := prometheus.NewRegistry()
	logger := slog.New(slog.NewTextHandler(io.Discard, &slog.HandlerOptions{Level: slog.LevelWarn}))
	api, err := controlapi.New(controlapi.Config{Auth: controlapi.AuthConfig{Secret: testSecret}, SeparateInternal: true},
		nil, lc, nil, nil, logger, reg, reg)
	if err != nil {
		b.Fatal(err)
	}
	defer api.Close()
	h := api.InternalHandler()
	const path = "/internal/v1/sessions/0b0e7c1e-5d3a-4c1b-9b53-2a4f7d0e6c11/heartbeat"
	const body = `{"last_seq":12,"acked_seq":12,"buffered_segments":0,"retries":0}`
	// One request and one writer, reset each time: what is measured is
	// the handler's work, not the harness's.
	rd := strings.NewReader(body)
	req := httptest.NewRequest(http.MethodPost, path, rd)
	req.Header.Set("Authorization", "Bearer vm-token-0123456789abcdef")
	req.Header.Set("Content-Type", "application/json")
	w := &resetWriter{h: http.Header{}}
	b.ReportAllocs()
	for b.Loop() {
		rd.Reset(body)
		req.Body = io.NopCloser(rd)
		w.reset()
		h.ServeHTTP(w, req)
		if w.code != http.StatusOK {
			b.Fatalf("heartbeat answered %d %s", w.code, w.body)
		}
	}
	if got := strings.TrimSpace(string(w.body)); got != `{"action":"continue"}` {
		b.Fatalf("heartbeat answer = %s", got)
	}
	if lc.beats == 0 {
		b.Fatal("no heartbeat reached the lifecycle")
	}
}

// resetWriter is an http.ResponseWriter reused across requests.
type resetWriter struct {
	h    http.Header
	code int
	body []byte
}

func (w *resetWriter) reset() {
	clear(w.h)
	w.code, w.body = 0, w.body[:0]
}

func (w *resetWriter) Header() http.Header { return w.h }

func (w *resetWriter) WriteHeader(code int) {
	if w.code == 0 {
		w.code = code
	}
}

func (w *resetWriter) Write(p []byte) (int, error) {
	w.WriteHeader(http.StatusOK)
	w.body = append(w.body, p...)
	return len(p), nil
}
