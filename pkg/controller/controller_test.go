package controller

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/interviewvm/controlplane/pkg/controlapi"
	"github.com/interviewvm/controlplane/pkg/postgres/postgrestest"
)

var sessionVMBin string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "controller-test-")
	if err != nil {
		panic(err)
	}
	sessionVMBin = filepath.Join(dir, "sessionvm")
	build := exec.Command("go", "build", "-o", sessionVMBin, "github.com/interviewvm/controlplane/cmd/sessionvm")
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "build sessionvm:", err)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

const testSecret = "test-secret-0123456789abcdef"

type controller struct {
	base  string
	dbURL string
	logs  *syncBuffer // the controller's log lines
}

// startController runs the whole controller in-process on a fresh database
// with the local provider and real sessionvm processes.
func startController(t *testing.T, extraEnv map[string]string) *controller {
	t.Helper()
	dbURL := postgrestest.NewURL(t)
	env := map[string]string{
		"DATABASE_URL": dbURL, "LISTEN_ADDR": "127.0.0.1:0", "JWT_SECRET": testSecret,
		"SESSIONVM_BIN": sessionVMBin, "HEARTBEAT_INTERVAL": "100ms", "HEARTBEAT_TIMEOUT": "5s",
		"LOG_FORMAT": "json", "LOG_LEVEL": "debug",
	}
	for k, v := range extraEnv {
		env[k] = v
	}
	ctx, cancel := context.WithCancel(context.Background())
	ready := make(chan string, 1)
	done := make(chan error, 1)
	logs := &syncBuffer{}
	go func() {
		done <- run(ctx, []string{"serve"}, func(k string) string { return env[k] }, io.Discard, logs, ready)
	}()
	select {
	case addr := <-ready:
		t.Cleanup(func() {
			cancel()
			if err := <-done; err != nil {
				t.Errorf("controller exited with %v", err)
			}
			if t.Failed() {
				t.Logf("controller log:\n%s", logs.String())
			}
		})
		return &controller{base: "http://" + addr, dbURL: dbURL, logs: logs}
	case err := <-done:
		cancel()
		t.Fatalf("controller did not start: %v\n%s", err, logs.String())
	case <-time.After(60 * time.Second):
		cancel()
		t.Fatalf("controller did not start in time\n%s", logs.String())
	}
	return nil
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func token(t *testing.T, tenant, role string) string {
	t.Helper()
	tok, err := controlapi.DevToken(testSecret, "authenticated", tenant, role, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

// call sends a JSON request and decodes the JSON answer.
func (c *controller) call(t *testing.T, method, path, tok string, body any) (int, map[string]any) {
	t.Helper()
	var r io.Reader
	switch b := body.(type) {
	case nil:
	case string:
		r = strings.NewReader(b)
	default:
		j, _ := json.Marshal(b)
		r = bytes.NewReader(j)
	}
	req, _ := http.NewRequest(method, c.base+path, r)
	if tok != "" {
		req.Header.Set("Authorization", "Bearer "+tok)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	var out map[string]any
	if len(raw) > 0 {
		if err := json.Unmarshal(raw, &out); err != nil {
			t.Fatalf("%s %s: answer is not JSON: %q", method, path, raw)
		}
	}
	return resp.StatusCode, out
}

func (c *controller) mustCall(t *testing.T, want int, method, path, tok string, body any) map[string]any {
	t.Helper()
	got, out := c.call(t, method, path, tok, body)
	if got != want {
		t.Fatalf("%s %s = %d %v, want %d", method, path, got, out, want)
	}
	return out
}

// seed creates a position, a candidate and an interview.
func (c *controller) seed(t *testing.T, tok string) string {
	t.Helper()
	pos := c.mustCall(t, 201, "POST", "/v1/positions", tok, map[string]any{
		"title": "Backend engineer", "competencies": []map[string]any{
			{"name": "Go", "weight": 0.6}, {"name": "PostgreSQL", "weight": 0.4, "description": "schemas and queries"},
		}})
	cand := c.mustCall(t, 201, "POST", "/v1/candidates", tok, map[string]any{"full_name": "Grace Hopper", "email": "grace@example.com"})
	iv := c.mustCall(t, 201, "POST", "/v1/interviews", tok, map[string]any{"candidate_id": cand["id"], "position_id": pos["id"]})
	if iv["status"] != "scheduled" || iv["architecture"] != "hybrid" {
		t.Fatalf("new interview = %v", iv)
	}
	return iv["id"].(string)
}

// vmPIDs returns the pids of live sessionvm processes of a session, found
// through /proc: their executable and SESSION_ID in their environment.
func vmPIDs(t *testing.T, sessionID string) []int {
	t.Helper()
	entries, err := os.ReadDir("/proc")
	if err != nil {
		t.Fatal(err)
	}
	var pids []int
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		exe, err := os.Readlink(fmt.Sprintf("/proc/%d/exe", pid))
		if err != nil || exe != sessionVMBin {
			continue
		}
		environ, err := os.ReadFile(fmt.Sprintf("/proc/%d/environ", pid))
		if err != nil {
			continue
		}
		if bytes.Contains(environ, []byte("\x00SESSION_ID="+sessionID+"\x00")) || bytes.HasPrefix(environ, []byte("SESSION_ID="+sessionID+"\x00")) {
			pids = append(pids, pid)
		}
	}
	return pids
}

// gone reports whether pid no longer exists at all: exited and reaped.
func gone(pid int) bool {
	_, err := os.Stat(fmt.Sprintf("/proc/%d", pid))
	return os.IsNotExist(err)
}

func eventually(t *testing.T, what string, timeout time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func TestInterviewEndToEnd(t *testing.T) {
	c := startController(t, nil)
	tenant := uuid.NewString()
	tok := token(t, tenant, "recruiter")
	id := c.seed(t, tok)

	ans := c.mustCall(t, 200, "POST", "/v1/interviews/"+id+"/start?wait=30", tok, nil)
	iv := ans["interview"].(map[string]any)
	if iv["status"] != "ready" {
		t.Fatalf("started interview status = %v", iv["status"])
	}
	m := iv["machine"].(map[string]any)
	wantName := "interview-hybrid-" + strings.ReplaceAll(tenant, "-", "")[:8] + "-" + strings.ReplaceAll(id, "-", "")[:12]
	if m["name"] != wantName {
		t.Fatalf("machine name = %v, want %s", m["name"], wantName)
	}
	if !regexp.MustCompile(`^interview-hybrid-[0-9a-f]{8}-[0-9a-f]{12}$`).MatchString(wantName) {
		t.Fatalf("bad expected name %s", wantName)
	}
	conn := ans["connect"].(map[string]any)
	if conn["access_token"] == "" || !strings.HasSuffix(conn["sdp_url"].(string), "/v1/interviews/"+id+"/session/sdp") {
		t.Fatalf("connect = %v", conn)
	}
	pids := vmPIDs(t, id)
	if len(pids) != 1 {
		t.Fatalf("sessionvm processes for the interview = %v, want exactly one", pids)
	}

	// A second start is idempotent: same machine, still one process.
	again := c.mustCall(t, 200, "POST", "/v1/interviews/"+id+"/start?wait=5", tok, nil)
	if again["interview"].(map[string]any)["machine"].(map[string]any)["id"] != m["id"] {
		t.Fatalf("second start changed the machine: %v", again)
	}

	c.mustCall(t, 202, "POST", "/v1/interviews/"+id+"/end", tok, nil)
	var final map[string]any
	eventually(t, "the interview to complete", 30*time.Second, func() bool {
		final = c.mustCall(t, 200, "GET", "/v1/interviews/"+id, tok, nil)
		return final["status"] == "completed"
	})
	if final["end_reason"] != "ended_by_user" || final["ended_at"] == nil {
		t.Fatalf("completed interview = %v", final)
	}
	eventually(t, "the sessionvm process to exit and be reaped", 30*time.Second, func() bool { return gone(pids[0]) })
	eventually(t, "the machine to be recorded destroyed", 10*time.Second, func() bool {
		got := c.mustCall(t, 200, "GET", "/v1/interviews/"+id, tok, nil)
		return got["machine"].(map[string]any)["state"] == "destroyed"
	})

	events := c.mustCall(t, 200, "GET", "/v1/interviews/"+id+"/events", tok, nil)["items"].([]any)
	var got []string
	for _, e := range events {
		ev := e.(map[string]any)
		got = append(got, ev["from"].(string)+"→"+ev["to"].(string))
	}
	want := []string{"scheduled→provisioning", "provisioning→ready", "ready→ending", "ending→completed"}
	if strings.Join(got, " ") != strings.Join(want, " ") {
		t.Fatalf("timeline = %v, want %v", got, want)
	}
	// A terminal interview cannot start again.
	c.mustCall(t, 409, "POST", "/v1/interviews/"+id+"/start", tok, nil)
}

func TestConcurrentStartsMakeOneVM(t *testing.T) {
	c := startController(t, nil)
	tok := token(t, uuid.NewString(), "recruiter")
	id := c.seed(t, tok)

	const n = 20
	var wg sync.WaitGroup
	machineIDs := make([]string, n)
	statuses := make([]int, n)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			st, out := c.call(t, "POST", "/v1/interviews/"+id+"/start?wait=30", tok, nil)
			statuses[i] = st
			if iv, ok := out["interview"].(map[string]any); ok {
				if m, ok := iv["machine"].(map[string]any); ok {
					machineIDs[i], _ = m["id"].(string)
				}
			}
		}()
	}
	wg.Wait()
	for i := range n {
		if statuses[i] != 200 || machineIDs[i] == "" || machineIDs[i] != machineIDs[0] {
			t.Fatalf("start %d: status %d machine %q (first machine %q)", i, statuses[i], machineIDs[i], machineIDs[0])
		}
	}
	if pids := vmPIDs(t, id); len(pids) != 1 {
		t.Fatalf("sessionvm processes = %v, want exactly one", pids)
	}
	db, err := pgx.Connect(context.Background(), c.dbURL)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close(context.Background())
	var provisioning int
	if err := db.QueryRow(context.Background(), `SELECT count(*) FROM interviews.session_events
		WHERE session_id = $1 AND to_status = 'provisioning'`, id).Scan(&provisioning); err != nil || provisioning != 1 {
		t.Fatalf("provisioning transitions = %d (%v), want 1", provisioning, err)
	}
	c.mustCall(t, 200, "POST", "/v1/interviews/"+id+"/cancel", tok, nil)
	pids := vmPIDs(t, id)
	eventually(t, "the cancelled interview's VM to be gone", 30*time.Second, func() bool { return len(vmPIDs(t, id)) == 0 })
	for _, p := range pids {
		eventually(t, "reaped", 10*time.Second, func() bool { return gone(p) })
	}
}

func TestBadInputChangesNothing(t *testing.T) {
	c := startController(t, nil)
	tenantA, tenantB := uuid.NewString(), uuid.NewString()
	tokA, tokB := token(t, tenantA, "admin"), token(t, tenantB, "admin")
	id := c.seed(t, tokA)

	counts := func() string {
		db, err := pgx.Connect(context.Background(), c.dbURL)
		if err != nil {
			t.Fatal(err)
		}
		defer db.Close(context.Background())
		var s string
		err = db.QueryRow(context.Background(), `SELECT concat_ws(',',
			(SELECT count(*) FROM interviews.positions), (SELECT count(*) FROM interviews.candidates),
			(SELECT count(*) FROM interviews.interview_sessions), (SELECT count(*) FROM interviews.session_events),
			(SELECT string_agg(status, ',') FROM interviews.interview_sessions))`).Scan(&s)
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	before := counts()

	cases := []struct {
		name, method, path, tok string
		body                    any
		status                  int
		code                    string
	}{
		{"malformed json", "POST", "/v1/positions", tokA, `{"title": "x",`, 400, "invalid_request"},
		{"wrong type", "POST", "/v1/positions", tokA, `{"title": 5, "competencies": []}`, 400, "invalid_request"},
		{"unknown field", "POST", "/v1/candidates", tokA, `{"full_name": "A", "email": "a@b.c", "admin": true}`, 400, "invalid_request"},
		{"weight zero", "POST", "/v1/positions", tokA, `{"title": "x", "competencies": [{"name": "Go", "weight": 0}]}`, 400, "invalid_request"},
		{"weight missing", "POST", "/v1/positions", tokA, `{"title": "x", "competencies": [{"name": "Go"}]}`, 400, "invalid_request"},
		{"empty body", "POST", "/v1/candidates", tokA, ``, 400, "invalid_request"},
		{"bad email", "POST", "/v1/candidates", tokA, `{"full_name": "A", "email": "nope"}`, 400, "invalid_request"},
		{"non-uuid body id", "POST", "/v1/interviews", tokA, `{"candidate_id": "x", "position_id": "y"}`, 400, "invalid_request"},
		{"non-uuid path id", "GET", "/v1/interviews/not-a-uuid", tokA, nil, 400, "invalid_request"},
		{"non-uuid start", "POST", "/v1/interviews/123/start", tokA, nil, 400, "invalid_request"},
		{"bad wait", "POST", "/v1/interviews/" + id + "/start?wait=600", tokA, nil, 400, "invalid_request"},
		{"other tenant's interview", "GET", "/v1/interviews/" + id, tokB, nil, 404, "not_found"},
		{"other tenant's start", "POST", "/v1/interviews/" + id + "/start", tokB, nil, 404, "not_found"},
		{"other tenant's end", "POST", "/v1/interviews/" + id + "/end", tokB, nil, 404, "not_found"},
		{"other tenant's cancel", "POST", "/v1/interviews/" + id + "/cancel", tokB, nil, 404, "not_found"},
		{"other tenant's events", "GET", "/v1/interviews/" + id + "/events", tokB, nil, 404, "not_found"},
		{"unknown interview", "GET", "/v1/interviews/" + uuid.NewString(), tokA, nil, 404, "not_found"},
		{"no token", "GET", "/v1/interviews/" + id, "", nil, 401, "unauthenticated"},
		{"garbage token", "GET", "/v1/interviews/" + id, "abc.def.ghi", nil, 401, "unauthenticated"},
		{"viewer writes", "POST", "/v1/candidates", token(t, tenantA, "viewer"), `{"full_name": "A", "email": "a@b.c"}`, 403, "forbidden"},
		{"end before start", "POST", "/v1/interviews/" + id + "/end", tokA, nil, 409, "conflict"},
		{"vm call with a tenant jwt", "GET", "/internal/v1/sessions/" + id + "/config", tokA, nil, 401, "unauthenticated"},
		{"vm call without token", "POST", "/internal/v1/sessions/" + id + "/ready", "", nil, 401, "unauthenticated"},
		{"unknown route", "GET", "/v1/nope", tokA, nil, 404, "not_found"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			st, out := c.call(t, tc.method, tc.path, tc.tok, tc.body)
			errObj, _ := out["error"].(map[string]any)
			if st != tc.status || errObj == nil || errObj["code"] != tc.code || errObj["message"] == "" {
				t.Fatalf("got %d %v, want %d with error code %s", st, out, tc.status, tc.code)
			}
		})
	}
	// A session token from another interview must not work either.
	if after := counts(); after != before {
		t.Fatalf("bad requests changed the database: before %s, after %s", before, after)
	}
	// Another tenant's candidate cannot be interviewed.
	candB := c.mustCall(t, 201, "POST", "/v1/candidates", tokB, map[string]any{"full_name": "B", "email": "b@example.com"})
	pos := c.mustCall(t, 201, "POST", "/v1/positions", tokA, map[string]any{"title": "T", "competencies": []map[string]any{{"name": "Go", "weight": 3}}})
	st, out := c.call(t, "POST", "/v1/interviews", tokA, map[string]any{"candidate_id": candB["id"], "position_id": pos["id"]})
	if st != 404 {
		t.Fatalf("interview of another tenant's candidate = %d %v, want 404", st, out)
	}
}

func TestReadyzAndMetrics(t *testing.T) {
	c := startController(t, nil)
	c.mustCall(t, 200, "GET", "/healthz", "", nil)
	c.mustCall(t, 200, "GET", "/readyz", "", nil)
	resp, err := http.Get(c.base + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	for _, name := range []string{"interview_interviews_started_total", "interview_interview_start_duration_seconds", "go_goroutines", "process_resident_memory_bytes", "interview_http_requests_total"} {
		if !bytes.Contains(body, []byte(name)) {
			t.Errorf("/metrics lacks %s", name)
		}
	}
	// Roll the schema bookkeeping back: readiness must fail.
	db, err := pgx.Connect(context.Background(), c.dbURL)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close(context.Background())
	if _, err := db.Exec(context.Background(), `DELETE FROM interviews.goose_db_version WHERE version_id > 0`); err != nil {
		t.Fatal(err)
	}
	out := c.mustCall(t, 503, "GET", "/readyz", "", nil)
	if out["error"].(map[string]any)["code"] != "unavailable" {
		t.Fatalf("readyz = %v", out)
	}
}

func TestHelpListsEverySetting(t *testing.T) {
	var out bytes.Buffer
	err := run(context.Background(), []string{"--help"}, func(string) string { return "" }, &out, &out, nil)
	if err == nil {
		t.Fatal("--help returned no error")
	}
	var c Config
	for _, s := range settings(&c) {
		if !strings.Contains(out.String(), s.env) || !strings.Contains(out.String(), "--"+flagName(s.env)) {
			t.Errorf("--help does not list %s", s.env)
		}
	}
	if !strings.Contains(out.String(), "default 45m") {
		t.Errorf("--help does not show defaults:\n%s", out.String())
	}
}

func TestInvalidConfigIsRefused(t *testing.T) {
	env := map[string]string{"DATABASE_URL": "postgres://x", "JWT_SECRET": "short", "PROVIDER": "moon"}
	err := run(context.Background(), nil, func(k string) string { return env[k] }, io.Discard, io.Discard, nil)
	if err == nil || !strings.Contains(err.Error(), "JWT_SECRET") || !strings.Contains(err.Error(), "PROVIDER") {
		t.Fatalf("err = %v", err)
	}
}
