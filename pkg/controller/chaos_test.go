package controller

import (
	"context"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/interviewvm/controlplane/pkg/flymachines/flymachinestest"
	"github.com/interviewvm/controlplane/pkg/postgres/postgrestest"
)

// chaosController is the controller as a real process, killed and
// restarted by the chaos test.
type chaosController struct {
	t    *testing.T
	bin  string
	env  []string
	base string
	cmd  *exec.Cmd
	logs *syncBuffer
}

func (c *chaosController) start() {
	c.t.Helper()
	cmd := exec.Command(c.bin, "serve")
	cmd.Env = c.env
	cmd.Stdout, cmd.Stderr = c.logs, c.logs
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		c.t.Fatal(err)
	}
	c.cmd = cmd
	deadline := time.Now().Add(30 * time.Second)
	for {
		resp, err := http.Get(c.base + "/healthz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				return
			}
		}
		if time.Now().After(deadline) {
			c.t.Fatalf("controller did not come up:\n%s", c.logs.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// buildController builds bin/controller into a temporary directory and
// returns its path, for tests that run the controller as a process.
func buildController(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "controller")
	build := exec.Command("go", "build", "-o", bin, "github.com/interviewvm/controlplane/cmd/controller")
	build.Stderr = os.Stderr
	if err := build.Run(); err != nil {
		t.Fatalf("build controller: %v", err)
	}
	return bin
}

// kill SIGKILLs the controller: no shutdown path runs.
func (c *chaosController) kill() {
	if c.cmd == nil {
		return
	}
	_ = c.cmd.Process.Kill()
	_ = c.cmd.Wait()
	c.cmd = nil
}

// TestChaos runs ~30 interviews on the fly provider through the fake
// Machines API with real sessionvm processes streaming synthetic
// transcripts, while the Fly API answers 429s, 5xx and lost creates, the
// controller is SIGKILLed at random points (mid-create, mid-ingest) and
// kept down for 10 s, and VMs are SIGKILLed. Whatever happens, in the end
// every session is terminal with a reason, no machine and no sessionvm
// process is left, and every transcript is whole: no gap, no duplicate,
// every acknowledged segment stored.
func TestChaos(t *testing.T) {
	if testing.Short() {
		t.Skip("chaos takes about a minute")
	}
	rng := rand.New(rand.NewPCG(2026, 11)) // fixed: the same points every run
	bin := buildController(t)

	fakeLogs := &syncBuffer{}
	logger := slog.New(slog.NewJSONHandler(fakeLogs, &slog.HandlerOptions{Level: slog.LevelInfo}))
	runner, err := flymachinestest.NewProcessRunner(flymachinestest.ProcessRunnerConfig{
		Binary: sessionVMBin, Logger: logger, StopTimeout: 3 * time.Second,
	})
	if err != nil {
		t.Fatal(err)
	}
	fake := flymachinestest.NewServer(
		flymachinestest.WithToken(flyTestToken), flymachinestest.WithApps(flyTestApp),
		flymachinestest.WithRunner(runner), flymachinestest.WithLogger(logger),
		flymachinestest.WithFirstIP(netip.MustParseAddr("127.0.40.2")),
		flymachinestest.WithBootDelay(100*time.Millisecond),
	)
	defer fake.Close()

	port := freeTCPPort(t)
	dbURL := postgrestest.NewURL(t)
	c := &chaosController{t: t, bin: bin, base: "http://127.0.0.1:" + port, logs: &syncBuffer{}, env: []string{
		"PATH=" + os.Getenv("PATH"), "DATABASE_URL=" + dbURL, "LISTEN_ADDR=127.0.0.1:" + port,
		"INTERNAL_URL=http://127.0.0.1:" + port, "JWT_SECRET=" + testSecret,
		"PROVIDER=fly", "FLY_API_URL=" + fake.URL, "FLY_API_TOKEN=" + flyTestToken, "FLY_APP=" + flyTestApp,
		"FLY_REGION=ams", "SESSION_IMAGE=" + flyTestImage, "SESSION_PORT=" + freeTCPPort(t), "FLY_RATE_LIMIT=50",
		"REALTIME=synthetic", "SYNTHETIC_TURN=150ms", "HEARTBEAT_INTERVAL=200ms", "HEARTBEAT_TIMEOUT=4s",
		"RECONCILE_INTERVAL=500ms", "ADOPT_AFTER=2s", "PROVISION_TIMEOUT=60s", "LOG_FORMAT=json",
		"RATE_LIMIT=1000", "RATE_BURST=1000",
		"WEBHOOK_ALLOW_PRIVATE=true", "WEBHOOK_RETRY_SCHEDULE=500ms,500ms,500ms,500ms,500ms,1s,1s,1s,1s,1s,2s,2s,2s,2s,2s,5s,5s,5s,5s,5s",
		"JOB_RESCUE_AFTER=1m",
	}}
	defer func() {
		c.kill()
		if t.Failed() {
			t.Logf("controller log (tail):\n%s", tail(c.logs.String(), 20000))
			t.Logf("fake log (tail):\n%s", tail(fakeLogs.String(), 10000))
		}
	}()
	c.start()
	ctl := &controller{base: c.base, dbURL: dbURL, logs: c.logs}
	tenant := uuid.NewString()
	tok := token(t, tenant, "recruiter")
	// The tenant's backend follows every interview through webhooks.
	hooks := newReceiver(t)
	ctl.registerWebhook(t, token(t, tenant, "admin"), hooks,
		"interview.ready", "interview.in_progress", "interview.completed", "interview.failed", "interview.cancelled")

	const n = 30
	ids := make([]string, n)
	for i := range ids {
		ids[i] = ctl.seed(t, tok)
	}
	// Scheduled interviews: the leader pre-warms their machines through
	// the faults and kills below; two start warm, two are cancelled.
	const nScheduled = 4
	sched := make([]string, nScheduled)
	{
		pos := ctl.mustCall(t, 201, "POST", "/v1/positions", tok, map[string]any{
			"title": "Scheduled", "competencies": []map[string]any{{"name": "Go", "weight": 1}}})
		cand := ctl.mustCall(t, 201, "POST", "/v1/candidates", tok, map[string]any{"full_name": "Sam", "email": "sam@example.com"})
		at := time.Now().Add(time.Minute).UTC().Format(time.RFC3339)
		for i := range sched {
			sched[i] = ctl.mustCall(t, 201, "POST", "/v1/interviews", tok, map[string]any{
				"candidate_id": cand["id"], "position_id": pos["id"], "scheduled_at": at})["id"].(string)
		}
	}
	post := func(path string) {
		for try := 0; try < 100; try++ {
			req, _ := http.NewRequest("POST", c.base+path, nil)
			req.Header.Set("Authorization", "Bearer "+tok)
			resp, err := http.DefaultClient.Do(req)
			if err == nil {
				resp.Body.Close()
				if resp.StatusCode < 500 {
					return
				}
			}
			time.Sleep(200 * time.Millisecond)
		}
	}
	start := func(from, to int) {
		for _, id := range ids[from:to] {
			// Like a frontend, retry a start that got no answer (the
			// controller was down): starts are idempotent. A start the
			// controller took but did not answer is adopted by the
			// reconciler from what the database says is provisioning.
			for try := 0; try < 100; try++ {
				req, _ := http.NewRequest("POST", c.base+"/v1/interviews/"+id+"/start?wait=0", nil)
				req.Header.Set("Authorization", "Bearer "+tok)
				resp, err := http.DefaultClient.Do(req)
				if err == nil {
					resp.Body.Close()
					if resp.StatusCode < 500 {
						break
					}
				}
				time.Sleep(200 * time.Millisecond)
			}
		}
	}
	kills, faults := 0, 0
	fault := func(op flymachinestest.Op, k int, f flymachinestest.Fault) {
		fake.FailNext(op, k, f)
		faults += k
	}
	killController := func(down time.Duration) {
		c.kill()
		kills++
		time.Sleep(down)
		c.start()
	}

	// 1. Starts under 429s, 5xx after the work, and lost answers; the
	// controller dies at a random point among them.
	fault(flymachinestest.OpCreate, 3, flymachinestest.Fault{Status: 429, RetryAfter: 200 * time.Millisecond})
	fault(flymachinestest.OpCreate, 2, flymachinestest.Fault{Status: 503, AfterWork: true})
	fault(flymachinestest.OpCreate, 2, flymachinestest.Fault{Drop: true})
	start(0, 10)
	time.Sleep(time.Duration(rng.IntN(400)) * time.Millisecond)
	killController(0)

	// 2. Mid-create: creates take a second; the controller dies during them.
	fault(flymachinestest.OpCreate, 4, flymachinestest.Fault{Delay: time.Second})
	fake.SetBootDelay(time.Duration(500+rng.IntN(1000)) * time.Millisecond) // slow waits
	started := make(chan struct{})
	go func() { defer close(started); start(10, 20) }()
	time.Sleep(time.Duration(300+rng.IntN(500)) * time.Millisecond)
	killController(time.Duration(rng.IntN(500)) * time.Millisecond)
	<-started
	fake.SetBootDelay(100 * time.Millisecond)
	fault(flymachinestest.OpDestroy, 2, flymachinestest.Fault{Status: 500})
	start(20, n)
	// Two scheduled interviews start (warm when their machine is
	// pre-warmed by now, joining the create when it is in flight), one is
	// cancelled.
	post("/v1/interviews/" + sched[0] + "/start?wait=0")
	post("/v1/interviews/" + sched[1] + "/start?wait=0")
	post("/v1/interviews/" + sched[2] + "/cancel")

	// 3. Interviews run and stream; some VMs die.
	eventually(t, "most interviews to be running", 60*time.Second, func() bool {
		return len(vmPIDsAll(t)) >= n-5
	})
	time.Sleep(time.Second)
	pids := vmPIDsAll(t)
	rng.Shuffle(len(pids), func(i, j int) { pids[i], pids[j] = pids[j], pids[i] })
	const killedVMs = 3
	for _, pid := range pids[:killedVMs] {
		_ = syscall.Kill(pid, syscall.SIGKILL)
		kills++
	}

	// 4. The controller is down for 10 s while the VMs stream, then dies
	// again mid-ingest.
	killController(10 * time.Second)
	time.Sleep(time.Duration(1000+rng.IntN(1000)) * time.Millisecond)
	killController(0)
	time.Sleep(2 * time.Second)

	// 5. Every interview is ended (or already over); the scheduled one
	// never started is cancelled, with its pre-warmed machine.
	post("/v1/interviews/" + sched[3] + "/cancel")
	for _, id := range append(ids, sched[:2]...) {
		req, _ := http.NewRequest("POST", c.base+"/v1/interviews/"+id+"/end", nil)
		req.Header.Set("Authorization", "Bearer "+tok)
		if resp, err := http.DefaultClient.Do(req); err == nil {
			resp.Body.Close()
		}
	}
	db, err := pgx.Connect(context.Background(), dbURL)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close(context.Background())
	// Meanwhile, measure how long a machine outlives its session.
	var worst time.Duration
	sampling := make(chan struct{})
	sampled := make(chan struct{})
	sdb, err := pgx.Connect(context.Background(), dbURL) // a connection of its own: pgx.Conn is not shared
	if err != nil {
		t.Fatal(err)
	}
	defer sdb.Close(context.Background())
	go func() {
		defer close(sampled)
		for {
			ended := map[string]time.Time{}
			rows, err := sdb.Query(context.Background(), `SELECT id::text, ended_at FROM interviews.interview_sessions WHERE ended_at IS NOT NULL`)
			if err == nil {
				for rows.Next() {
					var id string
					var at time.Time
					if rows.Scan(&id, &at) == nil {
						ended[id] = at
					}
				}
				rows.Close()
			}
			now := time.Now()
			for _, m := range fake.LiveMachines(flyTestApp) {
				if at, ok := ended[m.Metadata["interview_session_id"]]; ok && now.Sub(at) > worst {
					worst = now.Sub(at)
				}
			}
			select {
			case <-sampling:
				return
			case <-time.After(100 * time.Millisecond):
			}
		}
	}()
	var live string
	eventually(t, "every session to be terminal", 90*time.Second, func() bool {
		live = ""
		_ = db.QueryRow(context.Background(), `SELECT coalesce(string_agg(id::text || ' ' || status || ' machine ' ||
			coalesce(machine_id, '-') || ' acked ' || transcript_acked_seq || ' last ' || coalesce(last_seq_reported::text, '-'), '; '), '')
			FROM interviews.interview_sessions WHERE status NOT IN ('completed','failed','cancelled')`).Scan(&live)
		if live != "" {
			t.Logf("still live: %s", live)
		}
		return live == ""
	})
	eventually(t, "no machine left at the fake", 30*time.Second, func() bool { return len(fake.LiveMachines(flyTestApp)) == 0 })
	eventually(t, "no sessionvm process left", 30*time.Second, func() bool { return len(vmPIDsAll(t)) == 0 })
	close(sampling)
	<-sampled

	// 6. The transcripts.
	rows, err := db.Query(context.Background(), `SELECT s.id, s.status, s.end_reason, s.transcript_acked_seq,
		s.last_seq_reported, count(t.seq), coalesce(max(t.seq), 0), coalesce(min(t.seq), 0)
		FROM interviews.interview_sessions s LEFT JOIN interviews.transcript_segments t ON t.session_id = s.id
		GROUP BY s.id`)
	if err != nil {
		t.Fatal(err)
	}
	sessions, lost, segments, statuses := 0, 0, 0, map[string]int{}
	for rows.Next() {
		var id, status string
		var reason *string
		var acked, count, maxSeq, minSeq int64
		var last *int64
		if err := rows.Scan(&id, &status, &reason, &acked, &last, &count, &maxSeq, &minSeq); err != nil {
			t.Fatal(err)
		}
		sessions++
		segments += int(count)
		key := status
		if reason != nil {
			key += "/" + *reason
		} else {
			t.Errorf("session %s is %s without a reason", id, status)
		}
		statuses[key]++
		if count > 0 && (minSeq != 1 || maxSeq != count) {
			t.Errorf("session %s: %d segments spanning %d..%d: a gap", id, count, minSeq, maxSeq)
			lost += int(maxSeq - count)
		}
		if acked != count {
			t.Errorf("session %s: acknowledged up to %d but %d segments stored", id, acked, count)
			lost++
		}
		if status == "completed" && (last == nil || *last != count) {
			t.Errorf("session %s completed with last_seq %v but %d segments", id, last, count)
			lost++
		}
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	if sessions != n+nScheduled {
		t.Fatalf("sessions = %d, want %d", sessions, n+nScheduled)
	}
	for _, id := range sched {
		var status string
		var prewarmed *time.Time
		var reason *string
		if err := db.QueryRow(context.Background(), `SELECT status, end_reason, prewarmed_at FROM interviews.interview_sessions WHERE id = $1`, id).
			Scan(&status, &reason, &prewarmed); err != nil {
			t.Fatal(err)
		}
		t.Logf("scheduled interview %s: %s %v, pre-warmed %v", id, status, deref(reason), prewarmed != nil)
	}
	if got := statuses["cancelled/cancelled"]; got != 2 {
		t.Errorf("cancelled scheduled interviews = %d, want 2", got)
	}
	if segments == 0 {
		t.Fatal("no transcript was streamed at all")
	}
	leaked := len(fake.LiveMachines(flyTestApp))
	t.Logf("outcomes: %v; %d segments; a machine outlived its session by at most %s", statuses, segments, worst.Round(10*time.Millisecond))
	// Only the VMs the test killed may have lost their sessions; every
	// other interview completes, whatever else happened to it. (A killed
	// process may have been a duplicate machine, whose session lives on.)
	if got := statuses["completed/ended_by_user"]; got < n-killedVMs {
		t.Errorf("completed interviews = %d, want at least %d (all but the %d whose VM was killed)", got, n-killedVMs, killedVMs)
	}

	// 7. The webhooks: every terminal interview's event is stored, and every
	// stored message reaches the receiver (a job left running by a killed
	// controller is rescued after JOB_RESCUE_AFTER).
	lostHooks := func() (missing []string) {
		rows, err := db.Query(context.Background(), `SELECT s.id::text || ' ' || s.status, d.message_id
			FROM interviews.interview_sessions s LEFT JOIN interviews.webhook_deliveries d
			ON d.interview_id = s.id AND d.event_type = 'interview.' || s.status`)
		if err != nil {
			t.Fatal(err)
		}
		defer rows.Close()
		_, acked, _, _ := hooks.snapshot()
		for rows.Next() {
			var iv string
			var msg *string
			if err := rows.Scan(&iv, &msg); err != nil {
				t.Fatal(err)
			}
			if msg == nil || acked[*msg] == 0 {
				missing = append(missing, iv)
			}
		}
		return missing
	}
	var missing []string
	deadline := time.Now().Add(150 * time.Second)
	for missing = lostHooks(); len(missing) > 0 && time.Now().Before(deadline); missing = lostHooks() {
		time.Sleep(500 * time.Millisecond)
	}
	if len(missing) > 0 {
		t.Errorf("terminal events never delivered: %v", missing)
	}
	_, acked, invalid, _ := hooks.snapshot()
	if len(invalid) > 0 {
		t.Errorf("webhooks the reference library refused: %v", invalid)
	}
	for id, k := range acked {
		if k != 1 {
			t.Logf("webhook-id %s acknowledged %d times (a rescued job sends again; receivers deduplicate)", id, k)
		}
	}
	fmt.Printf("chaos: %d sessions, %d kills, %d faults, %d leaked machines, %d lost segments, %d webhooks delivered, %d lost webhooks\n",
		sessions, kills, faults, leaked, lost, len(acked), len(missing))
}

// vmPIDsAll returns the pids of every live sessionvm process of the tests.
func vmPIDsAll(t *testing.T) []int {
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
		if exe, err := os.Readlink(fmt.Sprintf("/proc/%d/exe", pid)); err == nil && exe == sessionVMBin {
			if st, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid)); err == nil && !isZombie(st) {
				pids = append(pids, pid)
			}
		}
	}
	return pids
}

func isZombie(stat []byte) bool {
	// The state follows the command name in parentheses: "pid (comm) S …".
	for i := len(stat) - 1; i > 0; i-- {
		if stat[i] == ')' && i+2 < len(stat) {
			return stat[i+2] == 'Z'
		}
	}
	return false
}

func tail(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[len(s)-n:]
}

func deref(s *string) string {
	if s == nil {
		return ""
	}
	return *s
}
