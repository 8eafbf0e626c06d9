package controller

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"os"
	"os/exec"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"go.yaml.in/yaml/v4"

	"github.com/interviewvm/controlplane/pkg/flymachines/flymachinestest"
)

// scrape is one /metrics answer: every sample by its exposition text
// (`name{label="v",…}`, labels sorted as client_golang writes them) and
// every family's type.
type scrape struct {
	raw     []byte
	samples map[string]float64
	types   map[string]string
}

func scrapeMetrics(t *testing.T, base string) scrape {
	t.Helper()
	resp, err := http.Get(base + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("GET /metrics = %d, %v", resp.StatusCode, err)
	}
	s := scrape{raw: raw, samples: map[string]float64{}, types: map[string]string{}}
	for _, line := range strings.Split(string(raw), "\n") {
		if rest, ok := strings.CutPrefix(line, "# TYPE "); ok {
			if name, typ, ok := strings.Cut(rest, " "); ok {
				s.types[name] = typ
			}
			continue
		}
		if line == "" || line[0] == '#' {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		v, err := strconv.ParseFloat(line[i+1:], 64)
		if err != nil {
			t.Fatalf("/metrics line %q: %v", line, err)
		}
		s.samples[line[:i]] = v
	}
	return s
}

// value returns a sample's value, or 0 when the scrape lacks it.
func (s scrape) value(sample string) float64 { return s.samples[sample] }

// promtool returns promtool's path. Without it the test is skipped on a
// developer's machine, and fails in CI (CI set), where `make test` has
// installed it.
func promtool(t *testing.T) string {
	t.Helper()
	p, err := exec.LookPath("promtool")
	if err != nil {
		if os.Getenv("CI") == "" {
			t.Skip("promtool not found (scripts/deps.sh promtool installs it; `make test` runs it)")
		}
		t.Fatal("promtool not found in CI: `make test` must install it (scripts/deps.sh promtool)")
	}
	return p
}

// doublePrefixed are the families whose own names start with interview_
// (pkg/provision's), so the controller's prefix makes them
// interview_interview_…; any other such family was prefixed by its package
// and again by the controller.
var doublePrefixed = map[string]bool{
	"start_duration_seconds": true, "start_phase_seconds": true, "duration_seconds": true,
}

// checkMetrics runs `promtool check metrics` on a scrape, which must find
// nothing, and checks that every family is namespaced: interview_, or the
// Go runtime's and the process's standard go_* and process_*.
func checkMetrics(t *testing.T, s scrape) {
	t.Helper()
	cmd := exec.Command(promtool(t), "check", "metrics")
	cmd.Stdin = bytes.NewReader(s.raw)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	if problems := strings.TrimSpace(out.String()); problems != "" || err != nil {
		t.Errorf("promtool check metrics (%v):\n%s", err, problems)
	}
	var exit *exec.ExitError
	if err != nil && !errors.As(err, &exit) {
		t.Fatalf("run promtool: %v", err)
	}
	for name, typ := range s.types {
		if !strings.HasPrefix(name, "interview_") && !strings.HasPrefix(name, "go_") && !strings.HasPrefix(name, "process_") {
			t.Errorf("family %s lacks the interview_ namespace", name)
		}
		if rest, ok := strings.CutPrefix(name, "interview_interview_"); ok && !doublePrefixed[rest] {
			t.Errorf("family %s is prefixed twice: its package must name it without interview_", name)
		}
		if typ == "counter" && !strings.HasSuffix(name, "_total") {
			t.Errorf("counter %s does not end in _total", name)
		}
	}
}

// The families an operator's alerts and dashboard (fly/) rely on, present
// on every controller whatever its provider.
var requiredFamilies = map[string]string{
	"interview_interview_start_duration_seconds":          "histogram",
	"interview_interview_start_phase_seconds":             "histogram",
	"interview_interviews_started_total":                  "counter",
	"interview_interviews_ended_total":                    "counter",
	"interview_interviews":                                "gauge",
	"interview_interview_duration_seconds":                "histogram",
	"interview_transcript_segments_received_total":        "counter",
	"interview_transcript_ingest_errors_total":            "counter",
	"interview_transcript_batch_size":                     "histogram",
	"interview_transcript_ack_lag_segments":               "gauge",
	"interview_transcript_stream_subscribers":             "gauge",
	"interview_reconciler_runs_total":                     "counter",
	"interview_reconciler_last_success_timestamp_seconds": "gauge",
	"interview_reconciler_orphans_destroyed_total":        "counter",
	"interview_reconciler_sessions_failed_total":          "counter",
	"interview_leader":                                    "gauge",
	"interview_machines_live":                             "gauge",
	"interview_sessionvm_buffered_segments":               "gauge",
	"interview_sessionvm_retries":                         "gauge",
	"interview_http_requests_total":                       "counter",
	"interview_http_request_duration_seconds":             "histogram",
	// The connection pool's, every one: a scrape that lacks one (or has it
	// under another name) fails.
	"interview_pgxpool_acquired_conns":                        "gauge",
	"interview_pgxpool_constructing_conns":                    "gauge",
	"interview_pgxpool_idle_conns":                            "gauge",
	"interview_pgxpool_total_conns":                           "gauge",
	"interview_pgxpool_max_conns":                             "gauge",
	"interview_pgxpool_acquire_total":                         "counter",
	"interview_pgxpool_canceled_acquire_total":                "counter",
	"interview_pgxpool_empty_acquire_total":                   "counter",
	"interview_pgxpool_new_conns_total":                       "counter",
	"interview_pgxpool_max_lifetime_destroy_total":            "counter",
	"interview_pgxpool_max_idle_destroy_total":                "counter",
	"interview_pgxpool_acquire_duration_seconds_total":        "counter",
	"interview_pgxpool_empty_acquire_wait_time_seconds_total": "counter",
	"go_goroutines":                 "gauge",
	"process_resident_memory_bytes": "gauge",
}

func TestMetricsMoveEndToEnd(t *testing.T) {
	promtool(t)
	c := startController(t, map[string]string{"RECONCILE_INTERVAL": "200ms"})
	tok := token(t, uuid.NewString(), "recruiter")
	id := c.seed(t, tok)

	const (
		starts  = "interview_interview_start_duration_seconds_count"
		started = "interview_interviews_started_total"
		ended   = `interview_interviews_ended_total{reason="ended_by_user"}`
		length  = "interview_interview_duration_seconds_count"
	)
	before := scrapeMetrics(t, c.base)
	c.mustCall(t, 200, "POST", "/v1/interviews/"+id+"/start?wait=30", tok, nil)
	// The start histogram is observed when the launch sees the VM ready,
	// which may be just after the answer.
	eventually(t, "the start histogram to count the start", 10*time.Second, func() bool {
		return scrapeMetrics(t, c.base).value(starts) == before.value(starts)+1
	})
	mid := scrapeMetrics(t, c.base)
	if got := mid.value(started); got != before.value(started)+1 {
		t.Errorf("%s went from %v to %v over one start", started, before.value(started), got)
	}
	if got := mid.value(`interview_interview_start_phase_seconds_count{phase="vm_ready"}`); got < 1 {
		t.Errorf(`interview_interview_start_phase_seconds{phase="vm_ready"} count = %v after a start`, got)
	}
	if mid.value(ended) != before.value(ended) {
		t.Errorf("%s moved before any end", ended)
	}

	c.mustCall(t, 202, "POST", "/v1/interviews/"+id+"/end", tok, nil)
	eventually(t, "the end to be counted by reason", 30*time.Second, func() bool {
		return scrapeMetrics(t, c.base).value(ended) == before.value(ended)+1
	})
	// The reconciler (leader of its one-replica fleet) passes every 200ms.
	eventually(t, "a reconciler pass and leadership", 10*time.Second, func() bool {
		s := scrapeMetrics(t, c.base)
		return s.value(`interview_reconciler_runs_total{result="ok"}`) >= 1 && s.value("interview_leader") == 1 &&
			s.value("interview_reconciler_last_success_timestamp_seconds") > 0
	})
	after := scrapeMetrics(t, c.base)
	if got := after.value(length); got != before.value(length)+1 {
		t.Errorf("%s went from %v to %v over one completed interview", length, before.value(length), got)
	}
	if got := after.value(starts); got != before.value(starts)+1 {
		t.Errorf("%s went from %v to %v: the end must not count a start", starts, before.value(starts), got)
	}

	var missing []string
	for name, typ := range requiredFamilies {
		if got, ok := after.types[name]; !ok {
			missing = append(missing, name)
		} else if got != typ {
			t.Errorf("%s is a %s, want a %s", name, got, typ)
		}
	}
	sort.Strings(missing)
	if len(missing) > 0 {
		t.Errorf("/metrics lacks %s", strings.Join(missing, ", "))
	}
	for name := range after.types {
		if strings.Contains(name, "session_id") || strings.Contains(name, "tenant") {
			t.Errorf("family %s names an id", name)
		}
	}
	for sample := range after.samples {
		for _, label := range []string{"session_id=", "tenant_id=", "machine_id=", id} {
			if strings.Contains(sample, label) {
				t.Errorf("sample %s carries an unbounded label (%s)", sample, label)
			}
		}
	}
	checkMetrics(t, after)
}

// TestMetricsOfTheFlyProviderPassPromtool checks the scrape of a
// controller on the fly provider, whose Fly client adds the flymachines_*
// families, after a start answered 429 once.
func TestMetricsOfTheFlyProviderPassPromtool(t *testing.T) {
	promtool(t)
	f := startFlyController(t, nil, nil)
	tok := token(t, uuid.NewString(), "recruiter")
	id := f.seed(t, tok)
	f.fake.FailNext(flymachinestest.OpCreate, 1, flymachinestest.Fault{Status: http.StatusTooManyRequests})
	f.startReady(t, tok, id)
	s := scrapeMetrics(t, f.base)
	for _, name := range []string{"interview_flymachines_requests_total", "interview_flymachines_request_duration_seconds", "interview_flymachines_retries_total"} {
		if _, ok := s.types[name]; !ok {
			t.Errorf("/metrics lacks %s", name)
		}
	}
	if got := s.value(`interview_flymachines_requests_total{code="429",op="create"}`); got != 1 {
		t.Errorf(`interview_flymachines_requests_total{code="429",op="create"} = %v, want the 1 injected`, got)
	}
	checkMetrics(t, s)
}

// Families the alerts and the dashboard may name besides requiredFamilies:
// the Fly client's (fly provider only) and Prometheus's own.
var optionalFamilies = map[string]string{
	"interview_flymachines_requests_total":           "counter",
	"interview_flymachines_request_duration_seconds": "histogram",
	"interview_flymachines_retries_total":            "counter",
	"interview_flymachines_ratelimit_waits_total":    "counter",
	"interview_pgxpool_idle_conns":                   "gauge",
	"interview_pgxpool_total_conns":                  "gauge",
	"interview_pgxpool_canceled_acquire_total":       "counter",
	"up": "gauge",
}

var (
	promStrings  = regexp.MustCompile(`"(?:[^"\\]|\\.)*"`)
	promMatchers = regexp.MustCompile(`\{[^}]*\}`)
	promGrouping = regexp.MustCompile(`\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)`)
	promRanges   = regexp.MustCompile(`\[[^\]]*\]`)
	promIdent    = regexp.MustCompile(`[a-zA-Z_:][a-zA-Z0-9_:]*`)
)

// exprMetrics returns the metric names a PromQL expression selects: its
// identifiers, less label matchers, grouping labels, functions and
// keywords.
func exprMetrics(expr string) []string {
	expr = promStrings.ReplaceAllString(expr, `""`)
	expr = promMatchers.ReplaceAllString(expr, " ")
	expr = promGrouping.ReplaceAllString(expr, " ")
	expr = promRanges.ReplaceAllString(expr, " ")
	var out []string
	for _, loc := range promIdent.FindAllStringIndex(expr, -1) {
		name := expr[loc[0]:loc[1]]
		if loc[0] > 0 && (expr[loc[0]-1] >= '0' && expr[loc[0]-1] <= '9' || expr[loc[0]-1] == '.') {
			continue // an exponent or a unit: 1e3, 5m
		}
		if strings.HasPrefix(strings.TrimSpace(expr[loc[1]:]), "(") {
			continue // a function or an aggregation
		}
		switch name {
		case "and", "or", "unless", "bool", "offset", "inf", "nan", "Inf", "NaN":
			continue
		}
		out = append(out, name)
	}
	return out
}

// TestAlertsAndDashboardNameExportedMetrics checks that every metric the
// alert rules and the dashboard query is one the controller exports
// (requiredFamilies is checked against a live scrape above), so a renamed
// metric cannot silently blank a panel or mute an alert.
func TestAlertsAndDashboardNameExportedMetrics(t *testing.T) {
	known := func(name string) bool {
		if _, ok := requiredFamilies[name]; ok {
			return true
		}
		if _, ok := optionalFamilies[name]; ok {
			return true
		}
		for _, suffix := range []string{"_bucket", "_count", "_sum"} {
			base, ok := strings.CutSuffix(name, suffix)
			if ok && (requiredFamilies[base] == "histogram" || optionalFamilies[base] == "histogram") {
				return true
			}
		}
		return false
	}
	var exprs []string
	raw, err := os.ReadFile("../../fly/alerts.yml")
	if err != nil {
		t.Fatal(err)
	}
	var rules struct {
		Groups []struct {
			Rules []struct {
				Alert       string            `yaml:"alert"`
				Expr        string            `yaml:"expr"`
				For         string            `yaml:"for"`
				Labels      map[string]string `yaml:"labels"`
				Annotations map[string]string `yaml:"annotations"`
			} `yaml:"rules"`
		} `yaml:"groups"`
	}
	if err := yaml.Unmarshal(raw, &rules); err != nil {
		t.Fatal(err)
	}
	alerts := 0
	for _, g := range rules.Groups {
		for _, r := range g.Rules {
			alerts++
			exprs = append(exprs, r.Expr)
			if r.For == "" || r.Labels["severity"] == "" || r.Annotations["summary"] == "" || r.Annotations["runbook"] == "" {
				t.Errorf("alert %s lacks for, severity, summary or runbook", r.Alert)
			}
		}
	}
	raw, err = os.ReadFile("../../fly/dashboard.json")
	if err != nil {
		t.Fatal(err)
	}
	var dash struct {
		Panels []struct {
			Title   string `json:"title"`
			Targets []struct {
				Expr string `json:"expr"`
			} `json:"targets"`
		} `json:"panels"`
	}
	if err := json.Unmarshal(raw, &dash); err != nil {
		t.Fatalf("dashboard.json: %v", err)
	}
	queries := 0
	for _, p := range dash.Panels {
		for _, tg := range p.Targets {
			queries++
			exprs = append(exprs, tg.Expr)
		}
	}
	if alerts < 10 || queries < 30 {
		t.Fatalf("read %d alerts and %d dashboard queries: the files were not parsed", alerts, queries)
	}
	used := map[string]bool{}
	for _, e := range exprs {
		for _, name := range exprMetrics(e) {
			used[name] = true
			if !known(name) {
				t.Errorf("%q queries %s, which the controller does not export", strings.TrimSpace(e), name)
			}
		}
	}
	for _, must := range []string{"interview_machines_live", "interview_interview_start_duration_seconds_bucket", "interview_flymachines_requests_total",
		"interview_transcript_ack_lag_segments", "interview_reconciler_last_success_timestamp_seconds", "interview_leader", "interview_http_requests_total"} {
		if !used[must] {
			t.Errorf("no alert or panel queries %s (or the expression parser is broken)", must)
		}
	}
}
