package controlapi_test

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/interviewvm/controlplane/pkg/controlapi"
	"github.com/interviewvm/controlplane/pkg/livefeed"
	"github.com/interviewvm/controlplane/pkg/postgres"
	"github.com/interviewvm/controlplane/pkg/postgres/postgrestest"
	"github.com/interviewvm/controlplane/pkg/provision"
	"github.com/interviewvm/controlplane/pkg/session"
)

const testSecret = "api-test-secret-0123456789"

// machines is a provider whose "VMs" are HTTP servers of the test: it
// records every spec (so the test can act as the VM with its token) and
// points every machine at vmAddr.
type machines struct {
	mu        sync.Mutex
	vmAddr    string
	specs     map[string]session.MachineSpec // by session id
	created   chan string                    // session ids
	destroyed map[string]bool
}

func newMachines(vmAddr string) *machines {
	return &machines{vmAddr: vmAddr, specs: map[string]session.MachineSpec{}, created: make(chan string, 100), destroyed: map[string]bool{}}
}

func (m *machines) Create(_ context.Context, spec session.MachineSpec) (session.Machine, error) {
	m.mu.Lock()
	m.specs[spec.SessionID] = spec
	m.mu.Unlock()
	m.created <- spec.SessionID
	return m.machine(spec.SessionID, session.MachineStarted), nil
}

func (m *machines) machine(sessionID, state string) session.Machine {
	return session.Machine{ID: "vm-" + sessionID[:8], Name: "interview-x-" + sessionID[:8], State: state,
		Provider: "test", Addr: m.vmAddr, SessionID: sessionID}
}

func (m *machines) Start(context.Context, string) error { return nil }
func (m *machines) WaitStarted(_ context.Context, id string) (session.Machine, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	for sid := range m.specs {
		if "vm-"+sid[:8] == id {
			return m.machine(sid, session.MachineStarted), nil
		}
	}
	return session.Machine{}, session.ErrMachineNotFound
}
func (m *machines) Get(context.Context, string) (session.Machine, error) {
	return session.Machine{}, session.ErrMachineNotFound
}
func (m *machines) List(context.Context) ([]session.Machine, error) { return nil, nil }
func (m *machines) Destroy(_ context.Context, id string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.destroyed[id] = true
	return nil
}

func (m *machines) token(sessionID string) string {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.specs[sessionID].Env[session.EnvSessionToken]
}

// env is a controller API on a real echo server and a real PostgreSQL.
type env struct {
	t        testing.TB
	db       *postgres.DB
	dbURL    string
	base     string
	machines *machines
	vm       *httptest.Server
	vmSeen   chan *http.Request
	logs     *lockedBuffer
	feed     *livefeed.Hub
}

type option func(*controlapi.Config, *provision.Config)

func newEnv(t testing.TB, opts ...option) *env {
	t.Helper()
	db, dbURL := postgrestest.New(t)
	e := newEnvOn(t, db, dbURL, opts...)
	// Segments ingested by this replica reach its streams from memory, as
	// in the controller; a replica added with newEnvOn shares the store
	// and so learns of them by notification only, as another replica does.
	db.OnAppended(e.feed.Appended)
	return e
}

// newEnvOn is newEnv on an existing database: a second controller replica.
func newEnvOn(t testing.TB, db *postgres.DB, dbURL string, opts ...option) *env {
	t.Helper()
	e := &env{t: t, db: db, dbURL: dbURL, vmSeen: make(chan *http.Request, 100), logs: &lockedBuffer{}}
	// The VM: answers SDP offers with an answer, and reports what it saw.
	e.vm = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		r.Body = io.NopCloser(bytes.NewReader(body))
		select {
		case e.vmSeen <- r:
		default:
		}
		switch r.URL.Path {
		case "/session/sdp":
			w.Header().Set("Content-Type", "application/sdp")
			w.WriteHeader(http.StatusCreated)
			fmt.Fprintf(w, "v=0\r\no=- answer-to %d bytes\r\n", len(body))
		case "/session/token":
			w.Header().Set("Content-Type", "application/json")
			fmt.Fprint(w, `{"value":"ek_test","expires_at":"2030-01-01T00:00:00Z","model":"gpt-realtime"}`)
		case "/session/slow":
		default:
			http.NotFound(w, r)
		}
	}))
	t.Cleanup(e.vm.Close)
	e.machines = newMachines(strings.TrimPrefix(e.vm.URL, "http://"))

	logger := slog.New(slog.NewTextHandler(e.logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	acfg := controlapi.Config{
		Auth: controlapi.AuthConfig{Secret: testSecret}, MaxDuration: time.Hour,
		StreamKeepAlive: time.Hour, RateLimit: 1000, RateBurst: 1000, VMTimeout: 2 * time.Second,
	}
	pcfg := provision.Config{Provider: "test", ControllerURL: "http://controller.invalid", Realtime: "simulated", HeartbeatInterval: time.Second}
	for _, o := range opts {
		o(&acfg, &pcfg)
	}
	reg := prometheus.NewRegistry()
	lifecycle := provision.New(pcfg, db, e.machines, logger, reg)
	feed := livefeed.New(db, 0, logger, reg)
	e.feed = feed
	ctx, cancel := context.WithCancel(context.Background())
	listening := make(chan struct{})
	go func() { defer close(listening); db.Listen(ctx, feed.Publish) }()
	api, err := controlapi.New(acfg, db, lifecycle, db, feed, logger, reg, reg)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(api.Handler())
	e.base = srv.URL
	t.Cleanup(func() {
		api.Close()
		srv.Close()
		lifecycle.Close()
		cancel()
		<-listening
		feed.Close()
		if t.Failed() {
			t.Logf("controller log:\n%s", e.logs.String())
		}
	})
	return e
}

// lockedBuffer is the captured controller log: written by server goroutines,
// read by the test while requests (a closing stream's log line) may still be
// writing.
type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.String()
}

func tenantToken(t testing.TB, tenant, role string) string {
	t.Helper()
	tok, err := controlapi.DevToken(testSecret, "authenticated", tenant, role, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

type response struct {
	status int
	header http.Header
	body   []byte
}

func (r response) json(t testing.TB) map[string]any {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal(r.body, &m); err != nil {
		t.Fatalf("answer is not JSON (%d): %q", r.status, r.body)
	}
	return m
}

func (r response) code() string {
	var m struct {
		Error struct{ Code string } `json:"error"`
	}
	_ = json.Unmarshal(r.body, &m)
	return m.Error.Code
}

// do sends a request; body may be nil, a string (sent as is, JSON) or any
// value (marshalled). Extra headers come in pairs.
func (e *env) do(method, path, tok string, body any, headers ...string) response {
	e.t.Helper()
	var r io.Reader
	ct := "application/json"
	switch b := body.(type) {
	case nil:
	case string:
		r = strings.NewReader(b)
	case []byte:
		r = bytes.NewReader(b)
	default:
		j, _ := json.Marshal(b)
		r = bytes.NewReader(j)
	}
	req, err := http.NewRequest(method, e.base+path, r)
	if err != nil {
		e.t.Fatal(err)
	}
	if body != nil {
		req.Header.Set("Content-Type", ct)
	}
	if tok != "" {
		req.Header.Set("Authorization", "Bearer "+tok)
	}
	for i := 0; i+1 < len(headers); i += 2 {
		req.Header.Set(headers[i], headers[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		e.t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	return response{status: resp.StatusCode, header: resp.Header, body: raw}
}

func (e *env) must(want int, method, path, tok string, body any, headers ...string) map[string]any {
	e.t.Helper()
	r := e.do(method, path, tok, body, headers...)
	if r.status != want {
		e.t.Fatalf("%s %s = %d %s, want %d", method, path, r.status, r.body, want)
	}
	if len(r.body) == 0 {
		return nil
	}
	return r.json(e.t)
}

// interview creates a position, a candidate and a scheduled interview.
func (e *env) interview(tok string) string {
	e.t.Helper()
	pos := e.must(201, "POST", "/v1/positions", tok, map[string]any{"title": "Engineer",
		"competencies": []map[string]any{{"name": "Go", "weight": 2}, {"name": "SQL", "weight": 1}}})
	cand := e.must(201, "POST", "/v1/candidates", tok, map[string]any{"full_name": "Ada", "email": "ada@example.com"})
	iv := e.must(201, "POST", "/v1/interviews", tok, map[string]any{"candidate_id": cand["id"], "position_id": pos["id"]})
	return iv["id"].(string)
}

// ready starts an interview and plays its VM reporting ready; it returns
// the VM's token and the start answer.
func (e *env) ready(tok, id string) (string, map[string]any) {
	e.t.Helper()
	e.must(202, "POST", "/v1/interviews/"+id+"/start?wait=0", tok, nil)
	select {
	case <-e.machines.created:
	case <-time.After(10 * time.Second):
		e.t.Fatal("no machine created")
	}
	vmTok := e.machines.token(id)
	e.must(204, "POST", "/internal/v1/sessions/"+id+"/ready", vmTok, nil)
	ans := e.must(200, "POST", "/v1/interviews/"+id+"/start?wait=10", tok, nil)
	return vmTok, ans
}

// count runs a counting query as the database owner (outside RLS).
func (e *env) count(query string, args ...any) int {
	e.t.Helper()
	var n int
	if err := e.db.Pool.QueryRow(context.Background(), query, args...).Scan(&n); err != nil {
		e.t.Fatal(err)
	}
	return n
}

func seg(seq int64, speaker, text string) session.Segment {
	return session.Segment{Seq: seq, Speaker: speaker, Text: text, ItemID: fmt.Sprintf("item_%d", seq)}
}

func newTenant() string { return uuid.NewString() }

func base64URL(s string) ([]byte, error) { return base64.RawURLEncoding.DecodeString(s) }
