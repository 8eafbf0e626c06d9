package controller

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/interviewvm/controlplane/pkg/session"
)

// cliRun runs one operator command in-process, as `controller <args…>`
// with env as its environment, against a running system.
func cliRun(t *testing.T, env map[string]string, args ...string) (stdout, stderr string, err error) {
	t.Helper()
	var out, errb bytes.Buffer
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	err = runCLI(ctx, args[0], args[1:], func(k string) string { return env[k] }, &out, &errb)
	return out.String(), errb.String(), err
}

// cliJSON runs a command with --json and decodes its answer into v.
func cliJSON(t *testing.T, env map[string]string, v any, args ...string) {
	t.Helper()
	out, stderr, err := cliRun(t, env, append(args, "--json")...)
	if err != nil {
		t.Fatalf("controller %s: %v\n%s", strings.Join(args, " "), err, stderr)
	}
	if err := json.Unmarshal([]byte(out), v); err != nil {
		t.Fatalf("controller %s --json: %v\n%s", strings.Join(args, " "), err, out)
	}
}

func cliOK(t *testing.T, env map[string]string, args ...string) string {
	t.Helper()
	out, stderr, err := cliRun(t, env, args...)
	if err != nil {
		t.Fatalf("controller %s: %v\n%s", strings.Join(args, " "), err, stderr)
	}
	return out
}

func localCLIEnv(c *controller) map[string]string {
	return map[string]string{
		"DATABASE_URL": c.dbURL, "JWT_SECRET": testSecret, "SESSIONVM_BIN": sessionVMBin,
		"LOG_FORMAT": "json", "LOG_LEVEL": "warn",
	}
}

type cliList struct {
	Items []struct {
		ID        string        `json:"id"`
		TenantID  string        `json:"tenant_id"`
		Status    session.State `json:"status"`
		EndReason *string       `json:"end_reason"`
	} `json:"items"`
	NextCursor string `json:"next_cursor"`
}

func (l cliList) ids() []string {
	var out []string
	for _, it := range l.Items {
		out = append(out, it.ID)
	}
	slices.Sort(out)
	return out
}

func sorted(ids ...string) []string {
	slices.Sort(ids)
	return ids
}

func TestCLISessions(t *testing.T) {
	c := startController(t, nil)
	env := localCLIEnv(c)
	tenantA, tenantB := uuid.NewString(), uuid.NewString()
	tokA, tokB := token(t, tenantA, "recruiter"), token(t, tenantB, "recruiter")
	a1, a2, b1 := c.seed(t, tokA), c.seed(t, tokA), c.seed(t, tokB)
	c.mustCall(t, 200, "POST", "/v1/interviews/"+a1+"/start?wait=30", tokA, nil)

	// list: every tenant, or one, or one status; paged.
	var all, onlyA, ready, page1, page2 cliList
	cliJSON(t, env, &all, "sessions", "list")
	cliJSON(t, env, &onlyA, "sessions", "list", "--tenant", tenantA)
	cliJSON(t, env, &ready, "sessions", "list", "--status", "ready")
	if got := all.ids(); !slices.Equal(got, sorted(a1, a2, b1)) {
		t.Errorf("sessions list = %v, want %v", got, sorted(a1, a2, b1))
	}
	if got := onlyA.ids(); !slices.Equal(got, sorted(a1, a2)) {
		t.Errorf("sessions list --tenant A = %v, want %v", got, sorted(a1, a2))
	}
	if got := ready.ids(); !slices.Equal(got, []string{a1}) || ready.Items[0].TenantID != tenantA {
		t.Errorf("sessions list --status ready = %+v, want only %s of tenant A", ready.Items, a1)
	}
	cliJSON(t, env, &page1, "sessions", "list", "--limit", "2")
	cliJSON(t, env, &page2, "sessions", "list", "--limit", "2", "--cursor", page1.NextCursor)
	if len(page1.Items) != 2 || page1.NextCursor == "" || len(page2.Items) != 1 || page2.NextCursor != "" ||
		!slices.Equal(sorted(append(page1.ids(), page2.ids()...)...), sorted(a1, a2, b1)) {
		t.Errorf("pages of 2 = %+v then %+v", page1, page2)
	}
	table := cliOK(t, env, "sessions", "list", "--status", "scheduled")
	if !strings.Contains(table, "STATUS") || !strings.Contains(table, a2) || !strings.Contains(table, b1) || strings.Contains(table, a1) {
		t.Errorf("sessions list --status scheduled table:\n%s", table)
	}

	// show: the interview, its timeline and phases, as a table and JSON.
	text := cliOK(t, env, "sessions", "show", a1)
	for _, want := range []string{a1, tenantA, "status        ready", "scheduled → provisioning", "provisioning → ready",
		"start took", "phases:", "ready         "} {
		if !strings.Contains(text, want) {
			t.Errorf("sessions show lacks %q:\n%s", want, text)
		}
	}

	// end, waiting for completion: the VM flushes, reports ended and goes.
	pids := vmPIDs(t, a1)
	if len(pids) != 1 {
		t.Fatalf("sessionvm processes of %s = %v", a1, pids)
	}
	out := cliOK(t, env, "sessions", "end", a1, "--wait", "30s")
	if !strings.Contains(out, a1+": completed (ended_by_user)") {
		t.Errorf("sessions end printed %q", out)
	}
	eventually(t, "the ended interview's VM to exit", 30*time.Second, func() bool { return gone(pids[0]) })
	var shown struct {
		Interview struct {
			Status session.State `json:"status"`
		} `json:"interview"`
		StartSeconds *float64 `json:"start_seconds"`
		Events       []struct {
			From, To session.State
			Actor    string
		} `json:"events"`
		Phases []session.Phase `json:"phases"`
	}
	cliJSON(t, env, &shown, "sessions", "show", a1)
	var timeline, phaseStates []string
	for _, e := range shown.Events {
		if e.From == e.To {
			continue // the analysis' outcome, not a transition (insights_test.go)
		}
		timeline = append(timeline, string(e.From)+"→"+string(e.To))
	}
	for _, p := range shown.Phases {
		phaseStates = append(phaseStates, string(p.State))
		if p.Seconds < 0 || p.Ongoing {
			t.Errorf("phase %+v of a completed interview", p)
		}
	}
	if want := []string{"scheduled→provisioning", "provisioning→ready", "ready→ending", "ending→completed"}; !slices.Equal(timeline, want) {
		t.Errorf("timeline = %v, want %v", timeline, want)
	}
	if want := []string{"scheduled", "provisioning", "ready", "ending"}; !slices.Equal(phaseStates, want) {
		t.Errorf("phases = %v, want %v", phaseStates, want)
	}
	if shown.Interview.Status != session.StateCompleted || shown.StartSeconds == nil || *shown.StartSeconds <= 0 {
		t.Errorf("shown = %+v", shown)
	}

	// cancel works on another tenant's scheduled interview, and on a
	// started one, whose VM then stops.
	out = cliOK(t, env, "sessions", "cancel", b1)
	if !strings.Contains(out, b1+": cancelled (cancelled)") {
		t.Errorf("sessions cancel printed %q", out)
	}
	if got := c.mustCall(t, 200, "GET", "/v1/interviews/"+b1, tokB, nil); got["status"] != "cancelled" {
		t.Errorf("cancelled interview = %v", got)
	}
	c.mustCall(t, 200, "POST", "/v1/interviews/"+a2+"/start?wait=30", tokA, nil)
	pids = vmPIDs(t, a2)
	cliOK(t, env, "sessions", "cancel", a2)
	for _, p := range pids {
		eventually(t, "the cancelled interview's VM to exit", 30*time.Second, func() bool { return gone(p) })
	}

	// Mistakes are refused with the reason.
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"sessions", "show", uuid.NewString()}, "not found"},
		{[]string{"sessions", "show", "nope"}, "must be a UUID"},
		{[]string{"sessions", "show"}, "want 1 argument"},
		{[]string{"sessions", "end", a1}, "cannot become ending"},
		{[]string{"sessions", "cancel", a1}, "cannot become cancelled"},
		{[]string{"sessions", "list", "--status", "bogus"}, "unknown status"},
		{[]string{"sessions", "list", "--tenant", "acme"}, "must be a UUID"},
		{[]string{"sessions", "frobnicate"}, "unknown subcommand"},
		{[]string{"sessions"}, "missing subcommand"},
		{[]string{"machines", "list"}, "PROVIDER=local"},
		{[]string{"machines", "gc", "--dry-run"}, "PROVIDER=local"},
	} {
		_, _, err := cliRun(t, env, tc.args...)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("controller %s: err = %v, want one saying %q", strings.Join(tc.args, " "), err, tc.want)
		}
	}
	// The commands are the controller's: through run, as main calls it.
	var out2 bytes.Buffer
	if err := run(context.Background(), []string{"sessions", "show", a1}, func(k string) string { return env[k] }, &out2, io.Discard, nil); err != nil ||
		!strings.Contains(out2.String(), "completed (ended_by_user)") {
		t.Errorf("run(sessions show) = %v\n%s", err, out2.String())
	}
	if err := run(context.Background(), []string{"machines", "--help"}, func(k string) string { return env[k] }, io.Discard, &out2, nil); !errors.Is(err, flag.ErrHelp) ||
		!strings.Contains(out2.String(), "machines gc --dry-run|--apply") {
		t.Errorf("run(machines --help) = %v\n%s", err, out2.String())
	}

	// Settings work as flags too.
	delete(env, "DATABASE_URL")
	if _, _, err := cliRun(t, env, "sessions", "list"); err == nil || !strings.Contains(err.Error(), "DATABASE_URL") {
		t.Errorf("sessions list without DATABASE_URL: err = %v", err)
	}
	var viaFlag cliList
	cliJSON(t, env, &viaFlag, "sessions", "list", "--database-url", c.dbURL, "--status", "completed")
	if got := viaFlag.ids(); !slices.Equal(got, []string{a1}) {
		t.Errorf("sessions list --database-url … --status completed = %v, want [%s]", got, a1)
	}
}

// flyCreateMachine creates a machine straight through the fake Machines
// API, as something other than the controller would: skip_launch, so no
// process runs, with the given metadata.
func flyCreateMachine(t *testing.T, f *flyController, name string, meta map[string]string) string {
	t.Helper()
	body, _ := json.Marshal(map[string]any{
		"name": name, "skip_launch": true,
		"config": map[string]any{"image": flyTestImage, "metadata": meta, "auto_destroy": true},
	})
	req, _ := http.NewRequest("POST", f.fake.URL+"/v1/apps/"+flyTestApp+"/machines", bytes.NewReader(body))
	req.Header.Set("Authorization", flyTestToken) // "FlyV1 …" carries its own scheme
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var m struct {
		ID string `json:"id"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&m); err != nil || resp.StatusCode != 200 || m.ID == "" {
		t.Fatalf("create machine %s: %d %v %+v", name, resp.StatusCode, err, m)
	}
	return m.ID
}

func TestCLIMachinesOnFly(t *testing.T) {
	// The serving controller's own reconciler passes once, at start: the
	// orphans below are left for the CLI.
	f := startFlyController(t, nil, map[string]string{"RECONCILE_INTERVAL": "1h"})
	env := map[string]string{
		"DATABASE_URL": f.dbURL, "PROVIDER": "fly", "FLY_API_URL": f.fake.URL, "FLY_API_TOKEN": flyTestToken,
		"FLY_APP": flyTestApp, "SESSION_IMAGE": flyTestImage, "SESSION_PORT": f.port,
		"LOG_FORMAT": "json", "LOG_LEVEL": "warn",
	}
	tenant := uuid.NewString()
	tok := token(t, tenant, "recruiter")
	live, cancelled := f.seed(t, tok), f.seed(t, tok)
	liveMachine := f.startReady(t, tok, live)
	f.mustCall(t, 200, "POST", "/v1/interviews/"+cancelled+"/cancel", tok, nil)
	managed := func(sessionID string) map[string]string {
		m := map[string]string{session.MetaManagedBy: session.ManagedByValue, session.MetaTenantID: tenant, session.MetaArch: "hybrid"}
		if sessionID != "" {
			m[session.MetaSessionID] = sessionID
		}
		return m
	}
	unknown := uuid.NewString()
	ofCancelled := flyCreateMachine(t, f, session.MachineName("hybrid", tenant, cancelled), managed(cancelled))
	ofUnknown := flyCreateMachine(t, f, session.MachineName("hybrid", tenant, unknown), managed(unknown))
	ofNobody := flyCreateMachine(t, f, "interview-hybrid-nometadata", managed(""))
	notOurs := flyCreateMachine(t, f, "someone-elses-machine", map[string]string{"role": "worker"})

	var rows []machineRow
	cliJSON(t, env, &rows, "machines", "list")
	byID := map[string]machineRow{}
	for _, r := range rows {
		byID[r.Machine.ID] = r
	}
	if len(rows) != 4 {
		t.Errorf("machines list = %+v, want the 4 managed machines", rows)
	}
	if r := byID[liveMachine]; r.SessionID != live || r.TenantID != tenant || r.SessionStatus != session.StateReady || r.Orphan {
		t.Errorf("live interview's machine row = %+v", r)
	}
	if r := byID[ofCancelled]; r.SessionID != cancelled || r.SessionStatus != session.StateCancelled || !r.Orphan {
		t.Errorf("cancelled interview's machine row = %+v", r)
	}
	if r := byID[ofUnknown]; r.SessionID != unknown || !r.Orphan || r.Note != "no such interview" {
		t.Errorf("unknown interview's machine row = %+v", r)
	}
	if r := byID[ofNobody]; !r.Orphan || r.SessionID != "" {
		t.Errorf("machine without a session = %+v", r)
	}
	if _, ok := byID[notOurs]; ok {
		t.Errorf("machines list shows a machine the control plane does not manage")
	}
	table := cliOK(t, env, "machines", "list")
	if !strings.Contains(table, "SESSION STATUS") || !strings.Contains(table, live) || !strings.Contains(table, "interview is cancelled") {
		t.Errorf("machines list table:\n%s", table)
	}

	liveIDs := func() []string {
		var ids []string
		for _, m := range f.fake.LiveMachines(flyTestApp) {
			ids = append(ids, m.ID)
		}
		slices.Sort(ids)
		return ids
	}
	before := liveIDs()
	orphans := sorted(ofCancelled, ofUnknown, ofNobody)
	gcIDs := func(rows []machineRow, action string) []string {
		var ids []string
		for _, r := range rows {
			if r.Action != action {
				t.Errorf("gc row %+v, want action %q", r, action)
			}
			ids = append(ids, r.Machine.ID)
		}
		slices.Sort(ids)
		return ids
	}
	cliJSON(t, env, &rows, "machines", "gc", "--dry-run")
	if got := gcIDs(rows, "would destroy"); !slices.Equal(got, orphans) {
		t.Errorf("gc --dry-run = %v, want %v", got, orphans)
	}
	if after := liveIDs(); !slices.Equal(after, before) {
		t.Errorf("gc --dry-run changed the machines: %v → %v", before, after)
	}
	out := cliOK(t, env, "machines", "gc", "--apply")
	if !strings.Contains(out, "destroyed") || !strings.Contains(out, "4 machine(s), 3 orphaned") {
		t.Errorf("gc --apply printed:\n%s", out)
	}
	if got, want := liveIDs(), sorted(liveMachine, notOurs); !slices.Equal(got, want) {
		t.Errorf("machines after gc --apply = %v, want %v (the live interview's and the unmanaged one)", got, want)
	}
	for _, id := range orphans {
		if m, ok := f.fake.Machine(flyTestApp, id); !ok || m.State != "destroyed" {
			t.Errorf("orphan %s after gc = %+v", id, m)
		}
	}
	cliJSON(t, env, &rows, "machines", "gc", "--apply")
	if len(rows) != 0 {
		t.Errorf("second gc --apply = %+v, want nothing to do", rows)
	}
	if st := f.mustCall(t, 200, "GET", "/v1/interviews/"+live, tok, nil)["status"]; st != "ready" {
		t.Errorf("live interview after gc = %v", st)
	}
	for _, args := range [][]string{{"machines", "gc"}, {"machines", "gc", "--dry-run", "--apply"}} {
		if _, _, err := cliRun(t, env, args...); err == nil || !strings.Contains(err.Error(), "exactly one of") {
			t.Errorf("controller %s: err = %v", strings.Join(args, " "), err)
		}
	}

	// end through the CLI on the fly provider: the machine goes.
	out = cliOK(t, env, "sessions", "end", live, "--wait", "30s")
	if !strings.Contains(out, fmt.Sprintf("%s: completed (ended_by_user)", live)) {
		t.Errorf("sessions end printed %q", out)
	}
	eventually(t, "the ended interview's machine to be destroyed", 30*time.Second, func() bool {
		m, ok := f.fake.Machine(flyTestApp, liveMachine)
		return ok && m.State == "destroyed"
	})
}
