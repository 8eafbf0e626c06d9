package controller

import (
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/interviewvm/controlplane/pkg/flymachines/flymachinestest"
)

// waitInterview polls an interview until ok holds (or fails the test after
// a generous deadline) and returns it.
func (f *flyController) waitInterview(t *testing.T, tok, id, what string, ok func(iv map[string]any) bool) map[string]any {
	t.Helper()
	deadline := time.Now().Add(90 * time.Second)
	for {
		iv := f.mustCall(t, 200, "GET", "/v1/interviews/"+id, tok, nil)
		if ok(iv) {
			return iv
		}
		if time.Now().After(deadline) {
			t.Fatalf("interview never %s: %v", what, iv)
		}
		time.Sleep(50 * time.Millisecond) // polling with a deadline
	}
}

func prewarmedOK(iv map[string]any) bool {
	m, _ := iv["machine"].(map[string]any)
	return iv["prewarmed_at"] != nil && m != nil && m["state"] == "created"
}

// A scheduled interview's machine is created ahead without booting; its
// start boots that machine: no create call, one start call.
func TestFlyScheduledInterviewStartsWarm(t *testing.T) {
	// The fake enforces Fly's limits, and the operator CLI below lists the
	// app's machines with a client of its own: a reconciler listing every
	// 200 ms would take every list token (1/s per app) and starve it, a
	// fight a production controller (10 s passes) never has. 2 s leaves
	// the CLI its share.
	f := startFlyController(t, []flymachinestest.Option{
		flymachinestest.WithFlyRateLimits(), flymachinestest.WithBootDelay(50 * time.Millisecond),
		flymachinestest.WithCreateDelay(200 * time.Millisecond),
	}, map[string]string{"REGIONS": "ams,fra", "RECONCILE_INTERVAL": "2s"})
	tok := token(t, uuid.NewString(), "recruiter")
	pos := f.mustCall(t, 201, "POST", "/v1/positions", tok, map[string]any{
		"title": "Backend engineer", "competencies": []map[string]any{{"name": "Go", "weight": 1}}})
	cand := f.mustCall(t, 201, "POST", "/v1/candidates", tok, map[string]any{"full_name": "Ada", "email": "ada@example.com"})
	body := func(extra map[string]any) map[string]any {
		b := map[string]any{"candidate_id": cand["id"], "position_id": pos["id"]}
		for k, v := range extra {
			b[k] = v
		}
		return b
	}

	// Bad input: the contract's error, and nothing is created.
	for _, bad := range []map[string]any{
		{"scheduled_at": "tomorrow at nine"},
		{"scheduled_at": "2026-13-01T09:00:00Z"},
		{"region": "mars"},
	} {
		code, ans := f.call(t, "POST", "/v1/interviews", tok, body(bad))
		e, _ := ans["error"].(map[string]any)
		if code != 400 || e == nil || e["code"] != "invalid_request" {
			t.Errorf("create with %v = %d %v, want 400 invalid_request", bad, code, ans)
		}
		if r, ok := bad["region"]; ok && !strings.Contains(e["message"].(string), "ams fra") {
			t.Errorf("unknown region %v: message %q does not list the regions", r, e["message"])
		}
	}
	if items := f.mustCall(t, 200, "GET", "/v1/interviews", tok, nil)["items"].([]any); len(items) != 0 {
		t.Fatalf("bad creates left interviews: %v", items)
	}

	// Default region: the first of REGIONS.
	plain := f.mustCall(t, 201, "POST", "/v1/interviews", tok, body(nil))
	if plain["region"] != "ams" || plain["scheduled_at"] != nil || plain["prewarmed_at"] != nil {
		t.Errorf("unscheduled interview = %v", plain)
	}

	at := time.Now().Add(time.Minute).UTC().Format(time.RFC3339)
	iv := f.mustCall(t, 201, "POST", "/v1/interviews", tok, body(map[string]any{"scheduled_at": at, "region": "fra"}))
	id := iv["id"].(string)
	if iv["region"] != "fra" || iv["scheduled_at"] == nil {
		t.Fatalf("scheduled interview = %v", iv)
	}
	iv = f.waitInterview(t, tok, id, "pre-warmed", prewarmedOK)
	if iv["status"] != "scheduled" {
		t.Fatalf("pre-warmed interview = %v", iv)
	}
	mid := iv["machine"].(map[string]any)["id"].(string)
	ms := f.sessionMachines(id)
	if len(ms) != 1 || ms[0].Region != "fra" || ms[0].State != "created" {
		t.Fatalf("fake machines of the interview = %+v, want one created in fra", ms)
	}
	if pids := vmPIDs(t, id); len(pids) != 0 {
		t.Errorf("a pre-warmed machine runs processes %v", pids)
	}
	if tl := f.timeline(t, tok, id); !slices.Contains(tl, "scheduled→scheduled (machine_prewarmed)") {
		t.Errorf("timeline = %v", tl)
	}

	// The operator CLI lists it.
	var rows []machineRow
	cliJSON(t, map[string]string{
		"DATABASE_URL": f.dbURL, "PROVIDER": "fly", "FLY_API_URL": f.fake.URL, "FLY_API_TOKEN": flyTestToken,
		"FLY_APP": flyTestApp, "SESSION_IMAGE": flyTestImage, "SESSION_PORT": f.port,
		"LOG_FORMAT": "json", "LOG_LEVEL": "warn",
	}, &rows, "machines", "list", "--prewarmed")
	if len(rows) != 1 || rows[0].Machine.ID != mid || !rows[0].Prewarmed || rows[0].SessionStatus != "scheduled" {
		t.Errorf("machines list --prewarmed = %+v, want the one pre-warmed machine %s", rows, mid)
	}

	creates := len(f.calls(flymachinestest.OpCreate, ""))
	if got := f.startReady(t, tok, id); got != mid {
		t.Errorf("started on machine %s, want the pre-warmed %s", got, mid)
	}
	if n := len(f.calls(flymachinestest.OpCreate, "")); n != creates {
		t.Errorf("the warm start made %d create calls", n-creates)
	}
	if n := len(f.calls(flymachinestest.OpStart, mid)); n != 1 {
		t.Errorf("the warm start made %d start calls of %s, want 1", n, mid)
	}
	if v := f.metric(t, `interview_starts_total{path="warm"}`); v != 1 {
		t.Errorf(`interview_starts_total{path="warm"} = %v, want 1`, v)
	}
	if v := f.metric(t, `interview_prewarm_outcomes_total{outcome="used"}`); v != 1 {
		t.Errorf(`interview_prewarm_outcomes_total{outcome="used"} = %v, want 1`, v)
	}

	// PATCH of a started interview: 409, nothing changed.
	code, ans := f.call(t, "PATCH", "/v1/interviews/"+id, tok, map[string]any{"region": "ams"})
	if e, _ := ans["error"].(map[string]any); code != 409 || e == nil || e["code"] != "conflict" {
		t.Errorf("PATCH of a started interview = %d %v, want 409 conflict", code, ans)
	}
	if got := f.mustCall(t, 200, "GET", "/v1/interviews/"+id, tok, nil); got["region"] != "fra" {
		t.Errorf("after the refused PATCH: region %v", got["region"])
	}
	// PATCH with bad values: 400, nothing changed.
	pid := plain["id"].(string)
	for _, bad := range []map[string]any{{"scheduled_at": "soon"}, {"region": "mars"}} {
		code, ans := f.call(t, "PATCH", "/v1/interviews/"+pid, tok, bad)
		if e, _ := ans["error"].(map[string]any); code != 400 || e == nil || e["code"] != "invalid_request" {
			t.Errorf("PATCH %v = %d %v, want 400 invalid_request", bad, code, ans)
		}
	}
	if got := f.mustCall(t, 200, "GET", "/v1/interviews/"+pid, tok, nil); got["region"] != "ams" || got["scheduled_at"] != nil {
		t.Errorf("after refused PATCHes: %v", got)
	}

	// Scheduling by PATCH pre-warms; cancel destroys the machine.
	f.mustCall(t, 200, "PATCH", "/v1/interviews/"+pid, tok, map[string]any{"scheduled_at": at})
	pre := f.waitInterview(t, tok, pid, "pre-warmed", prewarmedOK)
	pmid := pre["machine"].(map[string]any)["id"].(string)
	f.mustCall(t, 200, "POST", "/v1/interviews/"+pid+"/cancel", tok, nil)
	deadline := time.Now().Add(60 * time.Second)
	for {
		m, ok := f.fake.Machine(flyTestApp, pmid)
		if !ok || m.State == "destroyed" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("pre-warmed machine of a cancelled interview: %+v", m)
		}
		time.Sleep(50 * time.Millisecond) // polling with a deadline
	}
	if n := len(f.calls(flymachinestest.OpStart, pmid)); n != 0 {
		t.Errorf("the cancelled interview's machine was started %d times", n)
	}
}

// On the local provider a pre-warmed VM is a created-not-started machine:
// no process runs until the start spawns it.
func TestLocalScheduledInterviewStartsWarm(t *testing.T) {
	c := startController(t, map[string]string{"RECONCILE_INTERVAL": "200ms"})
	tok := token(t, uuid.NewString(), "recruiter")
	pos := c.mustCall(t, 201, "POST", "/v1/positions", tok, map[string]any{
		"title": "Backend engineer", "competencies": []map[string]any{{"name": "Go", "weight": 1}}})
	cand := c.mustCall(t, 201, "POST", "/v1/candidates", tok, map[string]any{"full_name": "Ada", "email": "ada@example.com"})
	iv := c.mustCall(t, 201, "POST", "/v1/interviews", tok, map[string]any{"candidate_id": cand["id"], "position_id": pos["id"],
		"scheduled_at": time.Now().Add(time.Minute).UTC().Format(time.RFC3339)})
	id := iv["id"].(string)
	if iv["region"] != "local" {
		t.Errorf("region = %v, want the local default", iv["region"])
	}
	f := &flyController{controller: c}
	iv = f.waitInterview(t, tok, id, "pre-warmed", prewarmedOK)
	mid := iv["machine"].(map[string]any)["id"].(string)
	if pids := vmPIDs(t, id); len(pids) != 0 {
		t.Errorf("a pre-warmed local VM runs processes %v", pids)
	}
	ans := c.mustCall(t, 200, "POST", "/v1/interviews/"+id+"/start?wait=30", tok, nil)
	got := ans["interview"].(map[string]any)
	if got["status"] != "ready" || got["machine"].(map[string]any)["id"] != mid {
		t.Fatalf("warm start = %v, want ready on machine %s", got, mid)
	}
	if pids := vmPIDs(t, id); len(pids) != 1 {
		t.Errorf("after the start: VM processes %v, want one", pids)
	}
}

// createRegions returns the regions of the fake's create calls for machine
// name, in order.
func (f *flyController) createRegions(t *testing.T, name string) []string {
	t.Helper()
	var out []string
	for _, c := range f.calls(flymachinestest.OpCreate, "") {
		var body struct {
			Name       string `json:"name"`
			Region     string `json:"region"`
			SkipLaunch bool   `json:"skip_launch"`
		}
		if err := json.Unmarshal(c.Body, &body); err != nil {
			t.Fatalf("create call body %q: %v", c.Body, err)
		}
		if body.Name == name {
			out = append(out, fmt.Sprintf("%s skip_launch=%v", body.Region, body.SkipLaunch))
		}
	}
	return out
}

// liveMachines returns the fake's machines of a session that are not
// destroyed.
func (f *flyController) liveMachines(sessionID string) []flymachinestest.Machine {
	var out []flymachinestest.Machine
	for _, m := range f.sessionMachines(sessionID) {
		if m.State != "destroyed" {
			out = append(out, m)
		}
	}
	return out
}

// PATCH of a pre-warmed interview: a new region replaces its machine (the
// old one destroyed, a new one created without booting in the new region);
// a new scheduled_at inside the window keeps it, and the start boots it.
// A start racing a region change never boots the old region's machine.
func TestFlyPatchOfAPrewarmedInterview(t *testing.T) {
	f := startFlyController(t, []flymachinestest.Option{
		flymachinestest.WithFlyRateLimits(), flymachinestest.WithBootDelay(50 * time.Millisecond),
		flymachinestest.WithCreateDelay(200 * time.Millisecond),
	}, map[string]string{"REGIONS": "ams,fra,ord", "RECONCILE_INTERVAL": "200ms"})
	tok := token(t, uuid.NewString(), "recruiter")
	pos := f.mustCall(t, 201, "POST", "/v1/positions", tok, map[string]any{
		"title": "Backend engineer", "competencies": []map[string]any{{"name": "Go", "weight": 1}}})
	cand := f.mustCall(t, 201, "POST", "/v1/candidates", tok, map[string]any{"full_name": "Ada", "email": "ada@example.com"})
	schedule := func(region string) (string, map[string]any) {
		at := time.Now().Add(time.Minute).UTC().Format(time.RFC3339)
		iv := f.mustCall(t, 201, "POST", "/v1/interviews", tok, map[string]any{"candidate_id": cand["id"], "position_id": pos["id"],
			"scheduled_at": at, "region": region})
		id := iv["id"].(string)
		return id, f.waitInterview(t, tok, id, "pre-warmed", prewarmedOK)
	}
	machineOf := func(iv map[string]any) map[string]any { return iv["machine"].(map[string]any) }

	id, iv := schedule("ams")
	old := machineOf(iv)
	oldID, name := old["id"].(string), old["name"].(string)
	if ms := f.liveMachines(id); len(ms) != 1 || ms[0].Region != "ams" {
		t.Fatalf("pre-warmed machines = %+v, want one in ams", ms)
	}

	// A new region: the machine moves.
	if got := f.mustCall(t, 200, "PATCH", "/v1/interviews/"+id, tok, map[string]any{"region": "fra"}); got["region"] != "fra" {
		t.Fatalf("PATCH region = %v", got)
	}
	iv = f.waitInterview(t, tok, id, "pre-warmed in fra", func(iv map[string]any) bool {
		return prewarmedOK(iv) && machineOf(iv)["region"] == "fra"
	})
	moved := machineOf(iv)["id"].(string)
	if moved == oldID || iv["status"] != "scheduled" {
		t.Fatalf("after the region change: %v", iv)
	}
	if m, ok := f.fake.Machine(flyTestApp, oldID); ok && m.State != "destroyed" {
		t.Errorf("the ams machine after the region change: %+v, want destroyed", m)
	}
	if n := len(f.calls(flymachinestest.OpStart, oldID)); n != 0 {
		t.Errorf("the ams machine was started %d times", n)
	}
	if ms := f.liveMachines(id); len(ms) != 1 || ms[0].ID != moved || ms[0].Region != "fra" || ms[0].State != "created" {
		t.Errorf("machines after the region change = %+v, want only %s, created in fra", ms, moved)
	}
	if got, want := f.createRegions(t, name), []string{"ams skip_launch=true", "fra skip_launch=true"}; !slices.Equal(got, want) {
		t.Errorf("create calls = %q, want %q", got, want)
	}
	if tl := f.timeline(t, tok, id); !slices.Equal(tl, []string{"scheduled→scheduled (machine_prewarmed)", "scheduled→scheduled (machine_prewarmed)"}) {
		t.Errorf("timeline = %q, want two pre-warms", tl)
	}

	// A new time inside the window keeps the machine: the start boots it.
	at := time.Now().Add(2 * time.Minute).UTC().Format(time.RFC3339)
	f.mustCall(t, 200, "PATCH", "/v1/interviews/"+id, tok, map[string]any{"scheduled_at": at})
	creates := len(f.calls(flymachinestest.OpCreate, ""))
	if got := f.startReady(t, tok, id); got != moved {
		t.Errorf("started on %s, want the pre-warmed %s", got, moved)
	}
	if n := len(f.calls(flymachinestest.OpCreate, "")); n != creates {
		t.Errorf("the warm start made %d create calls", n-creates)
	}
	if tl := f.timeline(t, tok, id); len(tl) < 3 || tl[2] != "scheduled→provisioning (warm_start)" {
		t.Errorf("timeline = %q, want the warm start after the pre-warms", tl)
	}

	// A start right after a region change, whether or not a pass replaced
	// the machine first: it runs in the new region, on the only machine.
	id2, iv2 := schedule("ams")
	old2 := machineOf(iv2)["id"].(string)
	f.mustCall(t, 200, "PATCH", "/v1/interviews/"+id2, tok, map[string]any{"region": "ord"})
	started := f.startReady(t, tok, id2)
	ms := f.liveMachines(id2)
	if started == old2 || len(ms) != 1 || ms[0].ID != started || ms[0].Region != "ord" {
		t.Errorf("started on %s (pre-warmed in ams: %s); live machines %+v, want one in ord", started, old2, ms)
	}
	if n := len(f.calls(flymachinestest.OpStart, old2)); n != 0 {
		t.Errorf("the ams machine was started %d times", n)
	}
}
