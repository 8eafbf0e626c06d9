package flymachinestest_test

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/interviewvm/controlplane/pkg/flymachines/flymachinestest"
)

func TestMain(m *testing.M) {
	if os.Getenv(helperEnv) != "" {
		os.Exit(runHelper()) // a machine's process, started by a ProcessRunner test
	}
	goleak.VerifyTestMain(m)
}

const app = "sessions"

// api sends raw requests to a fake, as any HTTP client would.
type api struct {
	t    *testing.T
	base string
	auth string
	hc   *http.Client
}

func newAPI(t *testing.T, s *flymachinestest.Server, auth string) *api {
	t.Helper()
	tr := &http.Transport{}
	t.Cleanup(tr.CloseIdleConnections)
	return &api{t: t, base: s.URL + "/v1/apps/" + app + "/machines", auth: auth, hc: &http.Client{Transport: tr, Timeout: 10 * time.Second}}
}

func (a *api) do(method, path, body string) (int, map[string]any, http.Header) {
	a.t.Helper()
	var r io.Reader
	if body != "" {
		r = strings.NewReader(body)
	}
	req, err := http.NewRequest(method, a.base+path, r)
	if err != nil {
		a.t.Fatal(err)
	}
	if a.auth != "" {
		req.Header.Set("Authorization", a.auth)
	}
	resp, err := a.hc.Do(req)
	if err != nil {
		a.t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(resp.Body)
	var out map[string]any
	if len(data) > 0 && data[0] == '{' {
		if err := json.Unmarshal(data, &out); err != nil {
			a.t.Fatalf("%s %s: decode %s: %v", method, path, data, err)
		}
	}
	if len(data) > 0 && data[0] == '[' {
		var list []any
		_ = json.Unmarshal(data, &list)
		out = map[string]any{"items": list}
	}
	return resp.StatusCode, out, resp.Header
}

const createBody = `{"name":"interview-hybrid-aaaa-bbbb","region":"ams","config":{"image":"sessionvm:1","env":{"A":"1"},"metadata":{"interview_session_id":"s1"},"auto_destroy":true,"restart":{"policy":"no"}}}`

func TestCreateAndStates(t *testing.T) {
	s := flymachinestest.NewServer(flymachinestest.WithBootDelay(200 * time.Millisecond))
	defer s.Close()
	a := newAPI(t, s, "Bearer x")

	status, m, h := a.do("POST", "", createBody)
	if status != 200 {
		t.Fatalf("create: %d %v", status, m)
	}
	if h.Get("Fly-Request-Id") == "" {
		t.Error("no fly-request-id header")
	}
	if m["state"] != "created" || m["region"] != "ams" || m["name"] != "interview-hybrid-aaaa-bbbb" {
		t.Errorf("create answer = %v", m)
	}
	id, _ := m["id"].(string)
	if len(id) != 14 {
		t.Errorf("id %q is not 14 hex digits", id)
	}
	if ip, _ := m["private_ip"].(string); !strings.HasPrefix(ip, "127.0.") {
		t.Errorf("private_ip = %q", ip)
	}
	cfg, _ := m["config"].(map[string]any)
	if cfg["auto_destroy"] != true {
		t.Errorf("config not echoed: %v", cfg)
	}

	_, m, _ = a.do("GET", "/"+id, "")
	if m["state"] != "starting" {
		t.Errorf("state right after create = %v, want starting", m["state"])
	}
	status, m, _ = a.do("GET", "/"+id+"/wait?state=started&timeout=5", "")
	if status != 200 || m["ok"] != true {
		t.Fatalf("wait: %d %v", status, m)
	}

	// Names are unique within an app.
	status, m, _ = a.do("POST", "", createBody)
	if status != http.StatusConflict || m["status"] != "name_taken" {
		t.Errorf("duplicate name: %d %v", status, m)
	}

	// Waiting for stopped needs the instance id.
	status, _, _ = a.do("GET", "/"+id+"/wait?state=stopped&timeout=1", "")
	if status != 400 {
		t.Errorf("wait stopped without instance_id: %d, want 400", status)
	}

	// A started machine cannot be destroyed without force.
	status, _, _ = a.do("DELETE", "/"+id, "")
	if status != http.StatusPreconditionFailed {
		t.Errorf("destroy without force: %d, want 412", status)
	}
	status, _, _ = a.do("DELETE", "/"+id+"?force=true", "")
	if status != 200 {
		t.Fatalf("destroy: %d", status)
	}
	status, _, _ = a.do("GET", "/"+id+"/wait?state=destroyed&timeout=5", "")
	if status != 200 {
		t.Fatalf("wait destroyed: %d", status)
	}
	status, m, _ = a.do("GET", "/"+id, "")
	if status != 200 || m["state"] != "destroyed" {
		t.Errorf("get destroyed: %d %v", status, m)
	}
	status, _, _ = a.do("DELETE", "/"+id+"?force=true", "")
	if status != 404 {
		t.Errorf("destroy again: %d, want 404", status)
	}
	// The name is free again once the machine is destroyed.
	if status, _, _ = a.do("POST", "", createBody); status != 200 {
		t.Errorf("create after destroy: %d", status)
	}
}

func TestWaitTimeouts(t *testing.T) {
	s := flymachinestest.NewServer()
	defer s.Close()
	a := newAPI(t, s, "")
	_, m, _ := a.do("POST", "", `{"config":{"image":"x"},"skip_launch":true}`)
	id, _ := m["id"].(string)
	if name, _ := m["name"].(string); name == "" {
		t.Error("no generated name")
	}

	for _, q := range []string{"timeout=61", "timeout=90", "timeout=0", "timeout=2m", "state=running"} {
		status, body, _ := a.do("GET", "/"+id+"/wait?"+q, "")
		if status != 400 || !strings.Contains(body["error"].(string), "invalid_argument") {
			t.Errorf("wait?%s: %d %v, want 400 invalid_argument", q, status, body)
		}
	}
	start := time.Now()
	status, _, _ := a.do("GET", "/"+id+"/wait?state=started&timeout=1", "")
	if status != http.StatusRequestTimeout || time.Since(start) < time.Second {
		t.Errorf("wait on a skip_launch machine: %d after %v, want 408 after 1s", status, time.Since(start))
	}
	if status, _, _ := a.do("GET", "/"+id+"/wait?state=started&timeout=1s", ""); status != http.StatusRequestTimeout {
		t.Errorf("duration timeout: %d", status)
	}
	if status, _, _ := a.do("GET", "/nope/wait", ""); status != 404 {
		t.Errorf("wait on unknown machine: %d", status)
	}
}

func TestValidation(t *testing.T) {
	s := flymachinestest.NewServer()
	defer s.Close()
	a := newAPI(t, s, "")
	for name, body := range map[string]string{
		"no config":        `{"name":"a"}`,
		"no image":         `{"config":{"env":{}}}`,
		"unknown field":    `{"config":{"image":"x"},"skipLaunch":true}`,
		"unknown config":   `{"config":{"image":"x","autodestroy":true}}`,
		"bad memory":       `{"config":{"image":"x","guest":{"memory_mb":100}}}`,
		"bad policy":       `{"config":{"image":"x","restart":{"policy":"never"}}}`,
		"non-string env":   `{"config":{"image":"x","env":{"A":1}}}`,
		"bad name":         `{"name":"Has_Upper","config":{"image":"x"}}`,
		"not json":         `{`,
		"bool auto_destry": `{"config":{"image":"x","auto_destroy":"yes"}}`,
	} {
		if status, _, _ := a.do("POST", "", body); status != 400 {
			t.Errorf("%s: %d, want 400", name, status)
		}
	}
}

func TestAuthAndApps(t *testing.T) {
	s := flymachinestest.NewServer(flymachinestest.WithToken("tok"), flymachinestest.WithApps(app))
	defer s.Close()
	for auth, want := range map[string]int{
		"":             401,
		"Bearer wrong": 401,
		"tok":          401,
		"Bearer tok":   200,
		"FlyV1 tok":    200,
	} {
		if status, _, _ := newAPI(t, s, auth).do("GET", "", ""); status != want {
			t.Errorf("Authorization %q: %d, want %d", auth, status, want)
		}
	}
	a := newAPI(t, s, "Bearer tok")
	a.base = strings.Replace(a.base, "/"+app+"/", "/other/", 1)
	if status, _, _ := a.do("GET", "", ""); status != 404 {
		t.Errorf("unknown app: %d, want 404", status)
	}
	for _, c := range s.Calls() {
		if c.Status == 200 && c.AuthScheme == "" {
			t.Errorf("call %+v recorded no auth scheme", c)
		}
	}
}

func TestListFilters(t *testing.T) {
	s := flymachinestest.NewServer()
	defer s.Close()
	a := newAPI(t, s, "")
	a.do("POST", "", `{"name":"m1","region":"ams","config":{"image":"x","metadata":{"k":"a","managed_by":"us"}}}`)
	a.do("POST", "", `{"name":"m2","region":"iad","config":{"image":"x","metadata":{"k":"b","managed_by":"us"}}}`)
	_, m3, _ := a.do("POST", "", `{"name":"m3","config":{"image":"x"},"skip_launch":true}`)
	count := func(q string) int {
		_, out, _ := a.do("GET", "?"+q, "")
		items, _ := out["items"].([]any)
		return len(items)
	}
	for q, want := range map[string]int{
		"":                                    3,
		"metadata.managed_by=us":              2,
		"metadata.managed_by=us&metadata.k=b": 1,
		"metadata.k=zzz":                      0,
		"region=ams":                          1,
		"state=created":                       1,
	} {
		if got := count(q); got != want {
			t.Errorf("list?%s = %d, want %d", q, got, want)
		}
	}
	a.do("DELETE", "/"+m3["id"].(string), "")
	time.Sleep(20 * time.Millisecond)
	if got := count("include_deleted=false"); got != 2 {
		t.Errorf("after destroy: %d, want 2", got)
	}
	if got := count("include_deleted=true"); got != 3 {
		t.Errorf("include_deleted: %d, want 3", got)
	}
	// The summary form is Fly's machine without config, checks, events,
	// host_status and nonce: exactly these keys.
	_, out, _ := a.do("GET", "?summary=true&metadata.managed_by=us", "")
	items := out["items"].([]any)
	if len(items) != 2 {
		t.Fatalf("summary list with a metadata filter = %d machines, want 2", len(items))
	}
	var keys []string
	for k := range items[0].(map[string]any) {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	if want := []string{"created_at", "id", "image_ref", "instance_id", "name", "private_ip", "region", "state", "updated_at"}; !slices.Equal(keys, want) {
		t.Errorf("summary machine keys = %v, want %v", keys, want)
	}
	// The full form keeps everything.
	_, out, _ = a.do("GET", "?metadata.managed_by=us", "")
	full := out["items"].([]any)[0].(map[string]any)
	for _, k := range []string{"config", "events", "host_status"} {
		if _, ok := full[k]; !ok {
			t.Errorf("full list lacks %s", k)
		}
	}
}

func TestMetadataEndpoints(t *testing.T) {
	s := flymachinestest.NewServer()
	defer s.Close()
	a := newAPI(t, s, "")
	_, m, _ := a.do("POST", "", `{"config":{"image":"x","metadata":{"a":"1"}}}`)
	id := m["id"].(string)
	if status, _, _ := a.do("POST", "/"+id+"/metadata/b", `{"value":"2"}`); status != 204 {
		t.Errorf("set: %d", status)
	}
	if status, _, _ := a.do("POST", "/"+id+"/metadata/b", `{}`); status != 400 {
		t.Errorf("set without value: %d", status)
	}
	_, md, _ := a.do("GET", "/"+id+"/metadata", "")
	if md["a"] != "1" || md["b"] != "2" {
		t.Errorf("metadata = %v", md)
	}
	if status, _, _ := a.do("DELETE", "/"+id+"/metadata/a", ""); status != 204 {
		t.Errorf("delete: %d", status)
	}
	_, got, _ := a.do("GET", "/"+id, "")
	if md := got["config"].(map[string]any)["metadata"].(map[string]any); len(md) != 1 || md["b"] != "2" {
		t.Errorf("config.metadata after edits = %v", md)
	}
}

func TestFaults(t *testing.T) {
	s := flymachinestest.NewServer()
	defer s.Close()
	a := newAPI(t, s, "")

	s.FailNext(flymachinestest.OpList, 2, flymachinestest.Fault{Status: 429, RetryAfter: 1500 * time.Millisecond})
	for i := 0; i < 2; i++ {
		status, body, h := a.do("GET", "", "")
		if status != 429 || h.Get("Retry-After") != "2" || body["error"] == "" {
			t.Errorf("429 fault: %d %v Retry-After=%q", status, body, h.Get("Retry-After"))
		}
	}
	if status, _, _ := a.do("GET", "", ""); status != 200 {
		t.Errorf("after faults: %d", status)
	}

	// A dropped create still creates.
	s.FailNext(flymachinestest.OpCreate, 1, flymachinestest.Fault{Drop: true})
	req, _ := http.NewRequest("POST", a.base, strings.NewReader(createBody))
	if resp, err := a.hc.Do(req); err == nil {
		resp.Body.Close()
		t.Fatalf("dropped create answered %d", resp.StatusCode)
	}
	if n := len(s.LiveMachines(app)); n != 1 {
		t.Errorf("machines after a dropped create = %d, want 1", n)
	}

	s.FailNext(flymachinestest.OpCreate, 1, flymachinestest.CapacityFault())
	status, body, _ := a.do("POST", "", `{"config":{"image":"x"}}`)
	if status != 412 || body["status"] != "insufficient_capacity" {
		t.Errorf("capacity fault: %d %v", status, body)
	}
	if n := len(s.LiveMachines(app)); n != 1 {
		t.Errorf("capacity fault created a machine")
	}

	// Hang holds the answer until the client gives up.
	s.FailNext(flymachinestest.OpGet, 1, flymachinestest.Fault{Hang: true})
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	req, _ = http.NewRequestWithContext(ctx, "GET", a.base+"/x", nil)
	if _, err := a.hc.Do(req); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("hang: %v, want deadline exceeded", err)
	}
}

func TestRateLimits(t *testing.T) {
	s := flymachinestest.NewServer(flymachinestest.WithFlyRateLimits())
	defer s.Close()
	a := newAPI(t, s, "")
	_, m, _ := a.do("POST", "", `{"config":{"image":"x"}}`)
	id := m["id"].(string)
	var got429 int
	for i := 0; i < 5; i++ {
		if status, _, _ := a.do("POST", "/"+id+"/start", ""); status == 429 {
			got429++
		}
	}
	if got429 != 2 {
		t.Errorf("5 starts at once: %d×429, want 2 (burst 3)", got429)
	}
	got429 = 0
	for i := 0; i < 12; i++ {
		if status, _, _ := a.do("GET", "/"+id, ""); status == 429 {
			got429++
		}
	}
	if got429 != 2 {
		t.Errorf("12 gets at once: %d×429, want 2 (burst 10)", got429)
	}
	if n := s.StatusCount(429); n != 4 {
		t.Errorf("StatusCount(429) = %d", n)
	}
}

// recordingRunner records the hooks the fake calls.
type recordingRunner struct {
	mu     sync.Mutex
	events []string
	last   flymachinestest.RunMachine
}

func (r *recordingRunner) Start(_ context.Context, m flymachinestest.RunMachine) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.events = append(r.events, "start "+m.Name)
	r.last = m
	return nil
}

func (r *recordingRunner) Stop(_ context.Context, m flymachinestest.RunMachine) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.events = append(r.events, "stop "+m.Name)
	return nil
}

func (r *recordingRunner) snapshot() ([]string, flymachinestest.RunMachine) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]string(nil), r.events...), r.last
}

func TestRunnerHooks(t *testing.T) {
	r := &recordingRunner{}
	s := flymachinestest.NewServer(flymachinestest.WithRunner(r))
	a := newAPI(t, s, "")

	_, m, _ := a.do("POST", "", createBody)
	id := m["id"].(string)
	a.do("GET", "/"+id+"/wait?timeout=5", "")
	events, rm := r.snapshot()
	if len(events) != 1 || events[0] != "start interview-hybrid-aaaa-bbbb" {
		t.Fatalf("runner events = %v", events)
	}
	for k, want := range map[string]string{
		"A": "1", "FLY_MACHINE_ID": id, "FLY_APP_NAME": app, "FLY_REGION": "ams",
		"FLY_PRIVATE_IP": m["private_ip"].(string), "FLY_IMAGE_REF": "sessionvm:1",
	} {
		if rm.Env[k] != want {
			t.Errorf("runner env %s = %q, want %q", k, rm.Env[k], want)
		}
	}

	// The process exits: restart policy "no" and auto_destroy remove it.
	rm.Exited(0)
	a.do("GET", "/"+id+"/wait?state=destroyed&timeout=5", "")
	if got, _ := s.Machine(app, id); got.State != "destroyed" {
		t.Errorf("after exit: %s, want destroyed", got.State)
	}
	rm.Exited(0) // late reports are ignored

	// A second machine, stopped through the API, then one left running
	// when the server closes.
	_, m2, _ := a.do("POST", "", `{"name":"two","config":{"image":"x"}}`)
	id2 := m2["id"].(string)
	a.do("GET", "/"+id2+"/wait?timeout=5", "")
	a.do("POST", "/"+id2+"/stop", `{"signal":"SIGTERM"}`)
	_, m2, _ = a.do("GET", "/"+id2+"/wait?state=stopped&timeout=5&instance_id="+m2["instance_id"].(string), "")
	if m2["state"] != "stopped" {
		t.Errorf("after stop: %v", m2)
	}
	_, m3, _ := a.do("POST", "", `{"name":"three","config":{"image":"x"}}`)
	a.do("GET", "/"+m3["id"].(string)+"/wait?timeout=5", "")
	s.Close()

	events, _ = r.snapshot()
	want := []string{"start interview-hybrid-aaaa-bbbb", "start two", "stop two", "start three", "stop three"}
	if strings.Join(events, ",") != strings.Join(want, ",") {
		t.Errorf("runner events = %v, want %v", events, want)
	}
}

func TestRestartPolicies(t *testing.T) {
	s := flymachinestest.NewServer()
	defer s.Close()
	a := newAPI(t, s, "")
	_, m, _ := a.do("POST", "", `{"config":{"image":"x","restart":{"policy":"on-failure","max_retries":1}}}`)
	id := m["id"].(string)
	a.do("GET", "/"+id+"/wait?timeout=5", "")
	if err := s.Exit(app, id, 1); err != nil {
		t.Fatal(err)
	}
	a.do("GET", "/"+id+"/wait?timeout=5", "")
	if got, _ := s.Machine(app, id); got.State != "started" {
		t.Errorf("after a failure with retries left: %s, want started", got.State)
	}
	if err := s.Exit(app, id, 1); err != nil {
		t.Fatal(err)
	}
	if got, _ := s.Machine(app, id); got.State != "stopped" {
		t.Errorf("after retries ran out: %s, want stopped", got.State)
	}
}
