package bench

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/uuid"

	"github.com/interviewvm/controlplane/pkg/controlapi"
)

// API calls a controller's public API.
type API struct {
	Base string
	HC   *http.Client
}

// NewAPI returns an API client with a transport sized for conns parallel
// callers.
func NewAPI(base string, conns int) *API {
	return &API{Base: base, HC: &http.Client{Transport: newTransport(conns), Timeout: 120 * time.Second}}
}

func newTransport(conns int) *http.Transport {
	return &http.Transport{
		MaxIdleConns: conns, MaxIdleConnsPerHost: conns, IdleConnTimeout: 90 * time.Second,
		DisableCompression: true,
	}
}

// Tenant is one tenant of the harness and its token.
type Tenant struct {
	ID    string
	Token string
}

// NewTenant returns a new tenant with a recruiter token.
func NewTenant() (Tenant, error) {
	id := uuid.NewString()
	tok, err := controlapi.DevToken(JWTSecret, "authenticated", id, "recruiter", 24*time.Hour)
	if err != nil {
		return Tenant{}, err
	}
	return Tenant{ID: id, Token: tok}, nil
}

// StatusError is an unexpected answer.
type StatusError struct {
	Method, Path string
	Status       int
	Body         string
}

func (e *StatusError) Error() string {
	return fmt.Sprintf("%s %s = %d %s", e.Method, e.Path, e.Status, e.Body)
}

// Do sends a JSON request and decodes the answer into out (when not nil).
// It returns the status; a status not in want is a *StatusError.
func (a *API) Do(ctx context.Context, method, path, tok string, body, out any, want ...int) (int, error) {
	var r io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return 0, err
		}
		r = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, a.Base+path, r)
	if err != nil {
		return 0, err
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if tok != "" {
		req.Header.Set("Authorization", "Bearer "+tok)
	}
	resp, err := a.HC.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	if err != nil {
		return resp.StatusCode, err
	}
	ok := len(want) == 0
	for _, w := range want {
		ok = ok || resp.StatusCode == w
	}
	if !ok {
		if len(raw) > 300 {
			raw = raw[:300]
		}
		return resp.StatusCode, &StatusError{Method: method, Path: path, Status: resp.StatusCode, Body: string(raw)}
	}
	if out != nil && len(raw) > 0 {
		if err := json.Unmarshal(raw, out); err != nil {
			return resp.StatusCode, fmt.Errorf("%s %s: decode answer: %w", method, path, err)
		}
	}
	return resp.StatusCode, nil
}

type idAnswer struct {
	ID string `json:"id"`
}

// Interview is the part of an interview answer the harness reads.
type Interview struct {
	ID      string `json:"id"`
	Status  string `json:"status"`
	Machine *struct {
		ID    string `json:"id"`
		State string `json:"state"`
	} `json:"machine"`
}

// StartAnswer is the answer of POST /start.
type StartAnswer struct {
	Interview Interview `json:"interview"`
}

// Seed creates a position and a candidate of tenant t, then n interviews
// of them with conc parallel calls, and returns the interview ids.
func (a *API) Seed(ctx context.Context, t Tenant, n, conc int) ([]string, error) {
	var pos, cand idAnswer
	if _, err := a.Do(ctx, "POST", "/v1/positions", t.Token, map[string]any{
		"title": "Backend engineer", "description": "Builds the interview control plane.",
		"competencies": []map[string]any{{"name": "Go", "weight": 3}, {"name": "PostgreSQL", "weight": 2}},
	}, &pos, http.StatusCreated); err != nil {
		return nil, err
	}
	if _, err := a.Do(ctx, "POST", "/v1/candidates", t.Token, map[string]any{
		"full_name": "Grace Hopper", "email": "grace@example.com",
	}, &cand, http.StatusCreated); err != nil {
		return nil, err
	}
	ids := make([]string, n)
	err := parallel(ctx, n, conc, func(ctx context.Context, i int) error {
		var iv idAnswer
		_, err := a.Do(ctx, "POST", "/v1/interviews", t.Token, map[string]any{
			"candidate_id": cand.ID, "position_id": pos.ID,
		}, &iv, http.StatusCreated)
		ids[i] = iv.ID
		return err
	})
	return ids, err
}

// SeedTenants creates tenants tenants and perTenant interviews of each.
func (a *API) SeedTenants(ctx context.Context, tenants, perTenant, conc int) ([]Tenant, [][]string, error) {
	ts := make([]Tenant, tenants)
	ids := make([][]string, tenants)
	for i := range ts {
		t, err := NewTenant()
		if err != nil {
			return nil, nil, err
		}
		ts[i] = t
	}
	err := parallel(ctx, tenants, max(1, conc/8), func(ctx context.Context, i int) error {
		var err error
		ids[i], err = a.Seed(ctx, ts[i], perTenant, 8)
		return err
	})
	return ts, ids, err
}

// Start calls POST /start?wait=<wait> once.
func (a *API) Start(ctx context.Context, tok, id string, wait int) (int, StartAnswer, error) {
	var ans StartAnswer
	st, err := a.Do(ctx, "POST", fmt.Sprintf("/v1/interviews/%s/start?wait=%d", id, wait), tok, nil, &ans,
		http.StatusOK, http.StatusAccepted)
	return st, ans, err
}

// StartReady starts an interview and, while the answer is 202, starts it
// again (an idempotent join) until it is ready or fails.
func (a *API) StartReady(ctx context.Context, tok, id string, wait int) error {
	for {
		st, ans, err := a.Start(ctx, tok, id, wait)
		if err != nil {
			return err
		}
		if st == http.StatusOK && ans.Interview.Status == "ready" {
			return nil
		}
		if st == http.StatusOK || (ans.Interview.Status != "provisioning" && ans.Interview.Status != "ready") {
			return fmt.Errorf("start %s: %d, interview %s", id, st, ans.Interview.Status)
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
	}
}

// Cancel cancels an interview (its machine is destroyed).
func (a *API) Cancel(ctx context.Context, tok, id string) error {
	_, err := a.Do(ctx, "POST", "/v1/interviews/"+id+"/cancel", tok, nil, nil, http.StatusOK)
	return err
}

// parallel runs fn(0..n-1) with at most conc at once and returns the
// first error; after one, the rest are skipped.
func parallel(ctx context.Context, n, conc int, fn func(ctx context.Context, i int) error) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var next atomic.Int64
	var once sync.Once
	var first error
	var wg sync.WaitGroup
	for range min(conc, n) {
		wg.Go(func() {
			for {
				i := int(next.Add(1) - 1)
				if i >= n || ctx.Err() != nil {
					return
				}
				if err := fn(ctx, i); err != nil {
					once.Do(func() { first = err; cancel() })
					return
				}
			}
		})
	}
	wg.Wait()
	if first == nil && ctx.Err() != nil {
		return ctx.Err()
	}
	return first
}
