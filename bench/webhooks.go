package bench

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"sync"
	"time"

	"github.com/interviewvm/controlplane/pkg/controlapi"
)

// WebhooksConfig sets case 7 up.
type WebhooksConfig struct {
	// Interviews change status at once (each cancelled: one
	// interview.cancelled message each).
	Interviews int
	// Concurrency is how many cancels run at once.
	Concurrency int
}

// Webhooks is case 7's result.
type Webhooks struct {
	Interviews int
	// Latency runs from the event's timestamp (taken in the transaction
	// of the status change) to the receiver reading the message.
	Latency Summary
	// PerSecond is messages received per second, from the first cancel
	// to the last message.
	PerSecond           float64
	Received, Duplicate int
}

// RunWebhooks registers a receiver (a real HTTP server in the harness),
// changes Interviews interviews' status and measures how fast and how
// soon their webhook messages arrive.
func (e *Env) RunWebhooks(ctx context.Context, cfg WebhooksConfig) (Webhooks, error) {
	res := Webhooks{Interviews: cfg.Interviews}
	dbURL, drop, err := e.NewDatabase(ctx, "webhooks")
	if err != nil {
		return res, err
	}
	defer drop()
	ctl, err := e.StartController(ctx, "webhooks", map[string]string{
		"DATABASE_URL": dbURL, "PROVIDER": "local", "SESSIONVM_BIN": e.SessionVMBin, "WEBHOOK_ALLOW_PRIVATE": "true",
	})
	if err != nil {
		return res, err
	}
	defer ctl.Stop()

	var mu sync.Mutex
	seen := map[string]bool{}
	var lat Samples
	var last time.Time
	all := make(chan struct{})
	recv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		now := time.Now()
		body, _ := io.ReadAll(r.Body)
		var ev struct {
			Timestamp time.Time `json:"timestamp"`
		}
		_ = json.Unmarshal(body, &ev)
		mu.Lock()
		id := r.Header.Get("webhook-id")
		if seen[id] {
			res.Duplicate++
		} else {
			seen[id] = true
			lat.Add(now.Sub(ev.Timestamp))
			last = now
			res.Received++
			if res.Received == cfg.Interviews {
				close(all)
			}
		}
		mu.Unlock()
		w.WriteHeader(http.StatusNoContent)
	}))
	defer recv.Close()

	api := NewAPI(ctl.Base, cfg.Concurrency+4)
	t, err := NewTenant()
	if err != nil {
		return res, err
	}
	admin, err := controlapi.DevToken(JWTSecret, "authenticated", t.ID, "admin", time.Hour)
	if err != nil {
		return res, err
	}
	if _, err := api.Do(ctx, "POST", "/v1/webhooks", admin, map[string]any{
		"url": recv.URL + "/hooks", "events": []string{"interview.cancelled"},
	}, nil, http.StatusCreated); err != nil {
		return res, fmt.Errorf("register the receiver: %w", err)
	}
	ids, err := api.Seed(ctx, t, cfg.Interviews, cfg.Concurrency)
	if err != nil {
		return res, err
	}
	e.logf("webhooks: %d interviews seeded; cancelling them", len(ids))
	began := time.Now()
	if err := parallel(ctx, len(ids), cfg.Concurrency, func(ctx context.Context, i int) error {
		return api.Cancel(ctx, t.Token, ids[i])
	}); err != nil {
		return res, err
	}
	select {
	case <-all:
	case <-time.After(2 * time.Minute):
	case <-ctx.Done():
	}
	mu.Lock()
	defer mu.Unlock()
	res.Latency = lat.Summary()
	if res.Received > 0 {
		res.PerSecond = float64(res.Received) / last.Sub(began).Seconds()
	}
	if res.Received != cfg.Interviews {
		return res, fmt.Errorf("webhooks: %d of %d messages received", res.Received, cfg.Interviews)
	}
	return res, nil
}
