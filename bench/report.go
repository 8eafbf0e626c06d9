package bench

import (
	_ "embed"
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"
)

// Results is everything one run measured.
type Results struct {
	Machine  Machine
	Postgres string
	Date     time.Time
	Command  string
	Elapsed  time.Duration
	// Quick marks a shortened development run.
	Quick bool

	StartCfg      StartLatencyConfig
	Start         []StartLatency
	StartSettings map[string]string
	StartErr      error
	// ExecReadyCfg and ExecReady: the session VM alone, exec → ready
	// report, its floor and exec → first request served (part of case 1).
	ExecReadyCfg ExecReadyConfig
	ExecReady    *ExecReady
	ExecReadyErr error

	BurstCfg BurstConfig
	Bursts   []Burst // one per size of BurstCfg.Sizes that ran
	BurstErr error

	// Durability is the -db cluster's; DurableDurability the cluster of
	// the ingest and live cases (production durability).
	Durability, DurableDurability Durability

	IngestCfg IngestConfig
	Ingest    *Ingest
	IngestErr error

	LiveCfg LiveConfig
	Live    *Live
	LiveErr error
	// LiveOne is case 4's second shape: many subscribers on one interview.
	LiveOneCfg LiveConfig
	LiveOne    *Live
	LiveOneErr error

	ScaleCfg ScaleConfig
	Scale    *Scale
	ScaleErr error

	LocalCfg LocalConfig
	Local    *Local
	LocalErr error

	ScheduledCfg ScheduledConfig
	Scheduled    *Scheduled
	ScheduledErr error

	WebhooksCfg WebhooksConfig
	Webhooks    *Webhooks
	WebhooksErr error

	InsightsCfg InsightsConfig
	Insights    *Insights
	InsightsErr error

	Profile *Profile
}

// Profile is the CPU profile of the biggest gap.
type Profile struct {
	Case, Figure string
	// Focus, when set, narrows the table to the stacks through it.
	Focus   string
	Path    string
	Seconds float64
	Top     string
	Err     error
}

// Row is one figure of the table.
type Row struct {
	Case, Figure, Ours, Limit, Ratio, Target string
	// Met is nil when the figure has no target.
	Met *bool
	// Gap is how far the figure is from its target (above 1: missed by
	// that factor); 0 without a target.
	Gap float64
	// Profile names the case to profile for this figure ("" when a CPU
	// profile cannot explain it).
	Profile string
}

func metRow(r Row, gap float64) Row {
	ok := gap <= 1
	r.Met, r.Gap = &ok, gap
	return r
}

func fms(d time.Duration) string { return fmt.Sprintf("%.1f ms", ms(d)) }

func ratio(a, b float64) string {
	if b == 0 {
		return "—"
	}
	return fmt.Sprintf("%.3f", a/b)
}

// durableText names a cluster's durability in a figure.
func durableText(d Durability) string {
	if d.On() {
		return "fsync and synchronous_commit on"
	}
	return "durability off (" + d.String() + ")"
}

func thousands(v float64) string {
	s := fmt.Sprintf("%.0f", v)
	var b strings.Builder
	for i, c := range s {
		if i > 0 && (len(s)-i)%3 == 0 {
			b.WriteByte(',')
		}
		b.WriteRune(c)
	}
	return b.String()
}

// Rows returns the table.
func (r *Results) Rows() []Row {
	var rows []Row
	for _, s := range r.Start {
		boot := fmt.Sprintf("boot %d ms", s.BootDelay.Milliseconds())
		for _, p := range []struct {
			name        string
			ours, floor time.Duration
		}{{"p50", s.Ours.P50, s.Floor.P50}, {"p99", s.Ours.P99, s.Floor.P99}} {
			row := Row{Case: "1", Figure: fmt.Sprintf("start → ready %s, %s (added %+.1f ms)", p.name, boot, ms(p.ours-p.floor)),
				Ours: fms(p.ours), Limit: fms(p.floor), Ratio: ratio(ms(p.ours), ms(p.floor)), Profile: "start"}
			if s.BootDelay >= 300*time.Millisecond {
				row.Target = "ratio ≤ 1.05"
				row = metRow(row, ms(p.ours)/ms(p.floor)/1.05)
			}
			rows = append(rows, row)
		}
		for _, a := range []struct {
			name  string
			added time.Duration
			limit float64
		}{{"p50", s.Ours.P50 - s.Floor.P50, 5}, {"p99", s.Ours.P99 - s.Floor.P99, 10}} {
			rows = append(rows, metRow(Row{Case: "1", Figure: fmt.Sprintf("added latency %s (ours − floor), %s", a.name, boot),
				Ours: fmt.Sprintf("%.1f ms", ms(a.added)), Limit: "—", Ratio: "—", Target: fmt.Sprintf("≤ %g ms", a.limit), Profile: "start"},
				ms(a.added)/a.limit))
		}
		if s.Failures > 0 {
			rows = append(rows, metRow(Row{Case: "1", Figure: "failed starts (" + boot + ")",
				Ours: fmt.Sprint(s.Failures), Limit: "—", Ratio: "—", Target: "0"}, 2))
		}
	}
	if x := r.ExecReady; x != nil {
		rows = append(rows, metRow(Row{Case: "1", Figure: "sessionvm exec → ready report p50 (config with the machine)",
			Ours: fms(x.Ready.P50), Limit: fms(x.Floor.P50), Ratio: ratio(ms(x.Ready.P50), ms(x.Floor.P50)), Target: "≤ 5 ms"}, ms(x.Ready.P50)/5))
		rows = append(rows, Row{Case: "1", Figure: "sessionvm exec → ready report p99", Ours: fms(x.Ready.P99), Limit: fms(x.Floor.P99),
			Ratio: ratio(ms(x.Ready.P99), ms(x.Floor.P99)), Target: "—"})
		rows = append(rows, Row{Case: "1", Figure: "exec → ready floor (minimal Go program) p50 / p99",
			Ours: fms(x.Floor.P50) + " / " + fms(x.Floor.P99), Limit: "—", Ratio: "—", Target: "—"})
		rows = append(rows, Row{Case: "1", Figure: "sessionvm exec → first request served p50 / p99",
			Ours: fms(x.Served.P50) + " / " + fms(x.Served.P99), Limit: "—", Ratio: "—", Target: "—"})
	}
	for _, b := range r.Bursts {
		if b.Minimum <= 0 {
			continue // did not run
		}
		rows = append(rows, metRow(Row{Case: "2", Figure: fmt.Sprintf("%d starts at once: all ready", b.Starts),
			Ours: fmt.Sprintf("%.2f s", b.AllReady.Seconds()), Limit: fmt.Sprintf("%.2f s", b.Minimum.Seconds()),
			Ratio: ratio(b.AllReady.Seconds(), b.Minimum.Seconds()), Target: "ratio ≤ 1.02"},
			b.AllReady.Seconds()/b.Minimum.Seconds()/1.02))
		fail := 0.0
		if b.Failures > 0 {
			fail = 2
		}
		rows = append(rows, metRow(Row{Case: "2", Figure: fmt.Sprintf("failed starts of %d", b.Starts), Ours: fmt.Sprint(b.Failures),
			Limit: "—", Ratio: "—", Target: "0"}, fail))
	}
	if in := r.Ingest; in != nil {
		row := Row{Case: "3", Figure: fmt.Sprintf("transcript ingest, %d VMs, batches of %d, %s", in.VMs, in.Batch, durableText(r.DurableDurability)),
			Ours: thousands(in.PerSecond) + " seg/s", Limit: thousands(in.CopyPerSecond) + " seg/s (COPY)",
			Ratio: ratio(in.PerSecond, in.CopyPerSecond), Target: "≥ 100,000/s and ratio ≥ 0.60", Profile: "ingest"}
		gap := max(100000/max(in.PerSecond, 1), 0.6/max(in.PerSecond/in.CopyPerSecond, 1e-9))
		rows = append(rows, metRow(row, gap))
		for _, st := range []StoreIngest{in.Store, in.StoreBigPool} {
			if st.Pool == 0 {
				continue
			}
			rows = append(rows, Row{Case: "3", Figure: fmt.Sprintf("… the store alone (postgres.AppendTranscript, no HTTP), pool of %d", st.Pool),
				Ours: thousands(st.PerSecond) + " seg/s", Limit: thousands(in.CopyPerSecond) + " seg/s (COPY)",
				Ratio: ratio(st.PerSecond, in.CopyPerSecond)})
		}
		if in.Errors > 0 {
			rows = append(rows, metRow(Row{Case: "3", Figure: "ingest errors", Ours: fmt.Sprint(in.Errors),
				Limit: "—", Ratio: "—", Target: "0"}, 2))
		}
	}
	if l := r.Live; l != nil {
		rows = append(rows, liveRows(l, 25)...)
	}
	if l := r.LiveOne; l != nil {
		rows = append(rows, liveRows(l, 10)...)
	}
	if s := r.Scale; s != nil {
		passes, quiet := Summarize(s.Passes), Summarize(s.QuietPasses)
		rows = append(rows,
			metRow(Row{Case: "5", Figure: fmt.Sprintf("controller resident memory, %s live interviews", thousands(float64(s.Ready))),
				Ours: fmt.Sprintf("%.0f MiB", mib(s.RSS)), Limit: "1,024 MiB (target)", Ratio: ratio(mib(s.RSS), 1024),
				Target: "≤ 1 GiB"}, mib(s.RSS)/1024),
			metRow(Row{Case: "5", Figure: fmt.Sprintf("reconcile pass over %s machines, slowest of %d (VMs quiet)", thousands(float64(s.Ready)), quiet.N),
				Ours: fms(quiet.Max), Limit: "1,000 ms (target)", Ratio: ratio(ms(quiet.Max), 1000),
				Target: "≤ 1 s", Profile: "scale"}, ms(quiet.Max)/1000),
			Row{Case: "5", Figure: fmt.Sprintf("reconcile pass, slowest of %d, under the heartbeat load below", passes.N),
				Ours: fms(passes.Max), Limit: "—", Ratio: "—"},
			metRow(Row{Case: "5", Figure: fmt.Sprintf("controller CPU, %s VMs at `HEARTBEAT_INTERVAL=%s` (%s heartbeats/s + %s segments/s)",
				thousands(float64(s.Ready)), s.HeartbeatInterval, thousands(s.Beats), thousands(s.Segments)), Ours: fmt.Sprintf("%.2f cores", s.CPU),
				Limit: "0.5 core (target)", Ratio: ratio(s.CPU, 0.5), Target: "≤ 0.5 core"}, s.CPU/0.5))
		if offered := float64(s.Ready) / s.HeartbeatInterval.Seconds(); s.Beats > 0 && s.Beats < 0.95*offered {
			// The harness did not deliver every heartbeat: say what the
			// controller's CPU would be at the full rate, all of it
			// counted as heartbeat cost (an upper bound).
			at := s.CPU * offered / s.Beats
			rows = append(rows, Row{Case: "5", Figure: fmt.Sprintf("controller CPU scaled to the %s heartbeats/s offered (linear in the rate reached, upper bound)", thousands(offered)),
				Ours: fmt.Sprintf("%.2f cores", at), Limit: "0.5 core (target)", Ratio: ratio(at, 0.5)})
		}
		if s.PGCPUErr == "" {
			rows = append(rows, metRow(Row{Case: "5", Figure: "PostgreSQL CPU (whole cluster), same window",
				Ours: fmt.Sprintf("%.2f cores", s.PGCPU), Limit: "0.5 core (target)", Ratio: ratio(s.PGCPU, 0.5),
				Target: "≤ 0.5 core"}, s.PGCPU/0.5))
		}
		if s.Failed > 0 {
			rows = append(rows, metRow(Row{Case: "5", Figure: "interviews failed during the run",
				Ours: fmt.Sprint(s.Failed), Limit: "—", Ratio: "—", Target: "0"}, 2))
		}
	}
	if l := r.Local; l != nil {
		rows = append(rows,
			metRow(Row{Case: "6", Figure: fmt.Sprintf("local start → ready p50, %d sequential", r.LocalCfg.Sequential),
				Ours: fms(l.Sequential.P50), Limit: fms(l.FloorSequential.P50) + " (bare VM)", Ratio: ratio(ms(l.Sequential.P50), ms(l.FloorSequential.P50)),
				Target: "≤ 50 ms"}, ms(l.Sequential.P50)/50),
			Row{Case: "6", Figure: fmt.Sprintf("local start → ready p99, %d sequential", r.LocalCfg.Sequential),
				Ours: fms(l.Sequential.P99), Limit: fms(l.FloorSequential.P99) + " (bare VM)", Ratio: ratio(ms(l.Sequential.P99), ms(l.FloorSequential.P99))},
			metRow(Row{Case: "6", Figure: fmt.Sprintf("local start → ready p50, %d concurrent ×%d rounds", r.LocalCfg.Concurrent, max(r.LocalCfg.Rounds, 1)),
				Ours: fms(l.Concurrent.P50), Limit: fms(l.FloorParallel.P50) + " (bare VM)", Ratio: ratio(ms(l.Concurrent.P50), ms(l.FloorParallel.P50)),
				Target: "≤ 1.2× bare", Profile: "local"}, ms(l.Concurrent.P50)/max(ms(l.FloorParallel.P50), 1e-9)/1.2),
			Row{Case: "6", Figure: fmt.Sprintf("local start → ready p99, %d concurrent ×%d rounds", r.LocalCfg.Concurrent, max(r.LocalCfg.Rounds, 1)),
				Ours: fms(l.Concurrent.P99), Limit: fms(l.FloorParallel.P99) + " (bare VM)", Ratio: ratio(ms(l.Concurrent.P99), ms(l.FloorParallel.P99))})
		top := maxOf(l.VMRSS)
		rows = append(rows, metRow(Row{Case: "6", Figure: fmt.Sprintf("sessionvm resident memory, largest of %d (median %.1f MiB)", len(l.VMRSS), mib(median(l.VMRSS))),
			Ours: fmt.Sprintf("%.1f MiB", mib(top)), Limit: "30 MiB (target)", Ratio: ratio(mib(top), 30), Target: "≤ 30 MiB"},
			mib(top)/30))
		if l.Failures > 0 {
			rows = append(rows, metRow(Row{Case: "6", Figure: "failed starts", Ours: fmt.Sprint(l.Failures),
				Limit: "—", Ratio: "—", Target: "0"}, 2))
		}
	}
	if sc := r.Scheduled; sc != nil {
		boot := fmt.Sprintf("create %s, boot %s", sc.Cfg.CreateDelay, sc.Cfg.BootDelay)
		rows = append(rows,
			metRow(Row{Case: "7", Figure: "scheduled start → ready p50, pre-warmed (" + boot + ")",
				Ours: fms(sc.Warm.P50), Limit: fms(sc.Floor.P50) + " (boot floor)", Ratio: ratio(ms(sc.Warm.P50), ms(sc.Floor.P50)),
				Target: "≤ 1.05×"}, ms(sc.Warm.P50)/ms(sc.Floor.P50)/1.05),
			metRow(Row{Case: "7", Figure: "scheduled start → ready p99, pre-warmed (" + boot + ")",
				Ours: fms(sc.Warm.P99), Limit: fms(sc.Floor.P99) + " (boot floor)", Ratio: ratio(ms(sc.Warm.P99), ms(sc.Floor.P99)),
				Target: "≤ 1.05×"}, ms(sc.Warm.P99)/ms(sc.Floor.P99)/1.05),
			Row{Case: "7", Figure: "cold start → ready p50 / p99 (same fake, no schedule)",
				Ours: fms(sc.Cold.P50) + " / " + fms(sc.Cold.P99), Limit: "—", Ratio: ratio(ms(sc.Cold.P50), ms(sc.Warm.P50)) + " of warm",
				Target: "≥ 2.3 s expected"})
	}
	if wh := r.Webhooks; wh != nil {
		n := fmt.Sprintf("%d interviews cancelled at once", wh.Interviews)
		rows = append(rows,
			Row{Case: "8", Figure: "webhook state change → receiver p50, " + n, Ours: fms(wh.Latency.P50), Limit: "—", Ratio: "—"},
			Row{Case: "8", Figure: "webhook state change → receiver p99, " + n, Ours: fms(wh.Latency.P99), Limit: "—", Ratio: "—"},
			Row{Case: "8", Figure: "webhook deliveries per second, " + n, Ours: fmt.Sprintf("%.0f msg/s", wh.PerSecond), Limit: "—", Ratio: "—"})
		if wh.Received != wh.Interviews {
			rows = append(rows, metRow(Row{Case: "8", Figure: "webhook messages missing", Ours: fmt.Sprint(wh.Interviews - wh.Received),
				Limit: "—", Ratio: "—", Target: "0"}, 2))
		}
	}
	if in := r.Insights; in != nil {
		n := fmt.Sprintf("%s interviews completed at once", thousands(float64(in.Interviews)))
		rows = append(rows,
			Row{Case: "9", Figure: fmt.Sprintf("analyses per second, %s (%d at a time per controller)", n, in.Workers),
				Ours: fmt.Sprintf("%.0f jobs/s", in.PerSecond), Limit: fmt.Sprintf("%.0f calls/s (plain SDK → fake, %d at a time)", in.SDKPerSecond, in.Workers),
				Ratio: ratio(in.PerSecond, in.SDKPerSecond)})
		for _, p := range []struct {
			name        string
			ours, floor time.Duration
		}{{"p50", in.EndToEnd.P50, in.Floor.P50}, {"p99", in.EndToEnd.P99, in.Floor.P99}} {
			rows = append(rows, Row{Case: "9", Figure: fmt.Sprintf("completion → insights stored %s, one at a time (added %+.1f ms)", p.name, ms(p.ours-p.floor)),
				Ours: fms(p.ours), Limit: fms(p.floor) + " (SDK round trip)", Ratio: ratio(ms(p.ours), ms(p.floor))})
		}
		rows = append(rows, Row{Case: "9", Figure: "… in the burst: completion → job taken p50 / p99; taken → stored p50 / p99",
			Ours:  fms(in.Wait.P50) + " / " + fms(in.Wait.P99) + "; " + fms(in.Work.P50) + " / " + fms(in.Work.P99),
			Limit: fms(in.Floor.P50) + " / " + fms(in.Floor.P99) + " (SDK round trip)", Ratio: ratio(ms(in.Work.P50), ms(in.Floor.P50)) + " (work p50)"})
		if in.NotReady > 0 {
			rows = append(rows, metRow(Row{Case: "9", Figure: "analyses not ready", Ours: fmt.Sprint(in.NotReady),
				Limit: "—", Ratio: "—", Target: "0"}, 2))
		}
	}
	return rows
}

// liveRows are one case 4 shape's rows, its p99 against targetMS.
func liveRows(l *Live, targetMS float64) []Row {
	sub := fmt.Sprintf("%d subscribers", l.SubscribersConnected)
	if l.Interviews == 1 {
		sub += " on one interview"
	} else {
		sub += fmt.Sprintf(" on %d interviews", l.Interviews)
	}
	rows := []Row{
		{Case: "4", Figure: "live transcript p50, " + sub, Ours: fms(l.Latency.P50),
			Limit: fms(l.Post.P50) + " (post)", Ratio: ratio(ms(l.Latency.P50), ms(l.Post.P50)), Profile: "live"},
		metRow(Row{Case: "4", Figure: "live transcript p99, " + sub, Ours: fms(l.Latency.P99),
			Limit: fms(l.Post.P99) + " (post)", Ratio: ratio(ms(l.Latency.P99), ms(l.Post.P99)),
			Target: fmt.Sprintf("≤ %.0f ms", targetMS), Profile: "live"}, ms(l.Latency.P99)/targetMS),
		// What the fan-out adds: from the moment the VM holds its
		// acknowledgement (the segment is committed) to the subscriber's
		// read. The rows above also hold the durable commit itself.
		{Case: "4", Figure: "live transcript after the post's acknowledgement p50 / p99, " + sub,
			Ours: fms(l.AfterAck.P50) + " / " + fms(l.AfterAck.P99), Limit: "—", Ratio: "—"},
		// One reader per followed interview per replica: at most one read
		// per post, whatever the number of subscribers.
		metRow(Row{Case: "4", Figure: "live-feed store reads per post, " + sub, Ours: fmt.Sprintf("%.2f", l.ReadsPerPost),
			Limit: "1 (one reader per interview)", Ratio: ratio(l.ReadsPerPost, 1), Target: "≤ 1"}, l.ReadsPerPost),
	}
	if l.Delivered != l.Expected || l.Duplicates > 0 || l.Errors > 0 {
		rows = append(rows, metRow(Row{Case: "4", Figure: "deliveries missing / duplicated / errors, " + sub,
			Ours: fmt.Sprintf("%d / %d / %d", l.Expected-l.Delivered, l.Duplicates, l.Errors), Limit: "—", Ratio: "—", Target: "0"}, 2))
	}
	return rows
}

// BiggestGap returns the profilable figure furthest from (or closest to)
// its target.
func (r *Results) BiggestGap() (Row, bool) {
	var best Row
	found := false
	for _, row := range r.Rows() {
		if row.Met == nil || row.Profile == "" {
			continue
		}
		if !found || row.Gap > best.Gap {
			best, found = row, true
		}
	}
	return best, found
}

//go:embed analysis.md
var analysis string

// Markdown renders docs/benchmarks.md.
func (r *Results) Markdown() string {
	var b strings.Builder
	w := func(format string, args ...any) { fmt.Fprintf(&b, format, args...) }
	w("# Benchmarks\n\n")
	w("Generated by `make bench` (bench/cmd/benchrun); do not edit by hand: the hand-written analysis at the end comes from `bench/analysis.md`.\n\n")
	if r.Quick {
		w("**A shortened development run (`-quick`): sizes and durations are reduced; not the figures of record.**\n\n")
	}
	w("| | |\n|---|---|\n")
	w("| machine | %s, %d cores, %.1f GiB memory (from /proc), Linux %s |\n", r.Machine.CPUModel, r.Machine.Cores, float64(r.Machine.MemTotal)/(1<<30), r.Machine.Kernel)
	w("| date | %s |\n", r.Date.UTC().Format("2006-01-02 15:04 MST"))
	w("| command | `%s` |\n", r.Command)
	w("| run time | %s |\n", r.Elapsed.Round(time.Second))
	w("| software | %s, PostgreSQL %s, controller and sessionvm from bin/ |\n", r.Machine.Go, r.Postgres)
	w("| clusters | cases 3 and 4 (ingest, live): a durable cluster (%s; `-durable-db`, by default scripts/pg.sh's dev cluster); the others: scripts/pg.sh --test (%s) |\n\n", r.DurableDurability, r.Durability)
	w("Everything shares this one machine: PostgreSQL, the controller, the VMs, the fake Fly API and the load drivers. ")
	w("Each figure's limit is measured in the same run, on the same machine, next to it.\n\n")

	w("## Results\n\n")
	w("| # | figure | ours | limit | ratio | target | |\n|---|---|---:|---:|---:|---|---|\n")
	for _, row := range r.Rows() {
		met := ""
		if row.Met != nil {
			met = "met"
			if !*row.Met {
				met = "**missed**"
			}
		}
		w("| %s | %s | %s | %s | %s | %s | %s |\n", row.Case, row.Figure, row.Ours, row.Limit, row.Ratio, row.Target, met)
	}
	for _, e := range []struct {
		name string
		err  error
	}{{"1 start latency", r.StartErr}, {"2 burst admission", r.BurstErr}, {"3 ingest", r.IngestErr},
		{"4 live transcript", r.LiveErr}, {"4 live transcript, one interview", r.LiveOneErr}, {"5 scale", r.ScaleErr}, {"6 local provider", r.LocalErr},
		{"7 scheduled start", r.ScheduledErr}, {"8 webhooks", r.WebhooksErr},
		{"9 insights", r.InsightsErr}} {
		if e.err != nil {
			w("\n**Case %s did not complete:** `%s`\n", e.name, oneLine(e.err.Error()))
		}
	}
	w("\n")
	r.methods(w)
	r.profileSection(w)
	w("## Analysis\n\n%s", analysis)
	return b.String()
}

func oneLine(s string) string {
	s = strings.ReplaceAll(s, "\n", " ")
	if len(s) > 400 {
		s = s[:400] + "…"
	}
	return s
}

func settingsText(m map[string]string) string {
	var parts []string
	for _, k := range slices.Sorted(maps.Keys(m)) {
		parts = append(parts, fmt.Sprintf("`%s=%s`", k, m[k]))
	}
	return strings.Join(parts, ", ")
}

func (r *Results) methods(w func(string, ...any)) {
	w("## How each figure is measured\n\n")
	w("The controller is always the real `bin/controller`, a separate process with its own fresh database on the private PostgreSQL, ")
	w("started with its defaults except where a case says otherwise. Its own per-user API limit is lifted for every case ")
	w("(`RATE_LIMIT=RATE_BURST=1000000`): the harness is one user per tenant doing the work of many. ")
	w("The fake Fly Machines API (`flymachinestest`) and the load drivers run in the harness process. Percentiles are nearest-rank.\n\n")

	w("**1. Start latency vs the platform floor.** Fake Fly API with a fixed boot delay; every machine is a real `sessionvm` process ")
	w("(`flymachinestest.ProcessRunner`). Floor: `flymachines.Client` create + wait for `started`, directly, plus the VM's ready ")
	w("report to a stand-in controller that answers ready and heartbeats from memory (no database): the floor pays the same ")
	w("VM cost (process start, ready report; the VM's configuration comes in the machine's environment, as ours does) as ours. ")
	w("Ours: `POST /v1/interviews/{id}/start?wait=60` until the 200 ")
	w("with status ready. The two alternate sample by sample (%d warm-up pairs dropped, then %d pairs per boot delay); each machine ", r.StartCfg.Warmup, r.StartCfg.Samples)
	w("is destroyed and its process reaped before the next sample. Controller: %s (latency, not admission: no client-side queueing; ", settingsText(r.StartSettings))
	w("the fake enforces no limit here). Added latency = ours − floor at the same percentile.\n\n")
	for _, s := range r.Start {
		w("- boot %d ms: floor %s; ours %s; failures %d%s\n", s.BootDelay.Milliseconds(), sumText(s.Floor), sumText(s.Ours), s.Failures, errText(s.FirstError))
	}
	if x := r.ExecReady; x != nil || r.ExecReadyErr != nil {
		w("- the session VM alone (%d samples after %d warm-up): `sessionvm` exec'd by the harness with its listener as fd 3 and its ", r.ExecReadyCfg.Samples, r.ExecReadyCfg.Warmup)
		w("configuration in the environment, until its ready report reaches the stand-in controller: ")
		if x != nil {
			w("%s. The floor (limit column), measured the same way in turn: the minimal Go program of bench/internal/floorvm ", sumText(x.Ready))
			w("(standard library only: takes the same listener, serves `GET /healthz`, posts the same ready report): %s. ", sumText(x.Floor))
			w("`sessionvm` exec → first request served (a `GET /healthz` sent to its port at exec, answered once it serves; ")
			w("in turn with the two others): %s\n", sumText(x.Served))
		} else {
			w("failed: %v\n", r.ExecReadyErr)
		}
	}
	w("\n")

	w("**2. Burst admission.** %s starts fired at once (spread over %d tenants; each size against its own fresh controller and fake) against the fake enforcing Fly's documented limits ", sizesText(r.BurstCfg.Sizes), r.BurstCfg.Tenants)
	if r.BurstCfg.RateScale != 1 {
		w("scaled ×%g (both the fake's limit and `FLY_RATE_LIMIT`) ", r.BurstCfg.RateScale)
	}
	w("(1 request/s per action and app or machine, burst 3; get 5/s, burst 10; 429 beyond), boot delay %d ms. ", r.BurstCfg.BootDelay.Milliseconds())
	w("Machines run no process (NopRunner-like): a synthetic VM per machine reports ready the moment it starts and heartbeats — ")
	w("hundreds of real sessionvm processes would measure this machine, not admission. Each start is `POST /start?wait=60`, repeated while ")
	w("the answer is 202 (an idempotent join). Minimum = (starts − Fly's burst of 3) ÷ rate + one boot: when the last create can get through at the earliest.")
	for k, b := range r.Bursts {
		if k == 0 {
			w(" Controller: %s (client-side bucket: rate `FLY_RATE_LIMIT` per action and Fly's burst of 3, keeping 200 ms of refill in hand against jitter; a create refused with 429 is sent again after a backoff).", settingsText(b.Settings))
		}
		w(" %d starts: all ready after %.2f s (minimum %.2f s); per-start latency %s; creates sent %d; 429 answers from the fake %d%s; %.0f database transactions per start while the burst lasted (heartbeats of the VMs already up included).",
			b.Starts, b.AllReady.Seconds(), b.Minimum.Seconds(), sumText(b.Latency), b.Creates, b.Answers429, errText(b.FirstError), b.TxPerStart)
	}
	if len(r.Bursts) > 0 {
		w(" With `PROVISION_TIMEOUT=5m` and one create per second, a burst of more than about 300 starts in one app would ")
		w("fail its tail with provision_failed: queueing counts against the timeout.")
	}
	w("\n\n")

	w("**3. Transcript ingest.** %d interviews started through the controller (fake Fly API, synthetic VMs); ", r.IngestCfg.VMs)
	w("%d concurrent simulated VMs each post a batch of %d segments (sessionvm's outbox maximum) with their session token to ", r.IngestCfg.VMs, r.IngestCfg.Batch)
	w("`POST /internal/v1/sessions/{id}/transcript`, the next as soon as the last is acknowledged, for %s. ", r.IngestCfg.Duration)
	w("Limit: the same number of segments (at least 50,000) COPYed with pgx `CopyFrom` into the same table (`interviews.transcript_segments`, ")
	w("same indexes, checks and foreign key) of the same database, in chunks of %d rows from %d connections at once; ", r.IngestCfg.CopyChunk, r.IngestCfg.CopyConns)
	w("as the cluster's superuser, since COPY FROM refuses a table with row-level security otherwise. ")
	w("The HTTP load driver shares the CPU with the controller and PostgreSQL; COPY's client is nearly free. ")
	w("Both run on the durable cluster (%s): every acknowledged batch and every COPY chunk is on disk when it returns.", r.DurableDurability)
	if in := r.Ingest; in != nil {
		w(" Ours: %s segments in %s; batch round trip %s; errors %d%s; %s. COPY: %s segments in %s.",
			thousands(float64(in.Segments)), in.Elapsed.Round(time.Millisecond), sumText(in.BatchLatency), in.Errors, errText(in.FirstError),
			poolText(in.Pool), thousands(float64(in.CopySegments)), in.CopyElapsed.Round(time.Millisecond))
		w(" To split the gap, the same batches also go straight through the controller's store, `postgres.DB.AppendTranscript`, from ")
		w("the harness (no HTTP, JSON, validation or authentication; one goroutine per VM) for %s, with the pool the controller ", r.IngestCfg.StoreDuration)
		w("gets by default (pgxpool: max(4, CPUs) connections) and with %d: store alone %s (batch %s)", in.StorePoolMax,
			thousands(in.Store.PerSecond)+" seg/s", sumText(in.Store.Latency))
		if in.StoreBigPool.Pool > 0 {
			w(", pool of %d %s (batch %s)", in.StoreBigPool.Pool, thousands(in.StoreBigPool.PerSecond)+" seg/s", sumText(in.StoreBigPool.Latency))
		}
		w(".")
	}
	w("\n\n")

	w("**4. Live transcript latency.** Two shapes: %s; and %s. ", liveShape(r.LiveCfg), liveShape(r.LiveOneCfg))
	w("Latency: from the VM sending its post to a subscriber ")
	w("reading the segment's event. Limit: the post's own round trip (until the VM holds the acknowledgement), measured at the same ")
	w("time: a segment can be delivered only once it is committed. Store reads per post: the controller's live-feed reads ")
	w("(`interview_livefeed_reads_total`) over the posts; one reader per followed interview keeps it independent of the subscribers.")
	for _, l := range []*Live{r.Live, r.LiveOne} {
		if l == nil {
			continue
		}
		w(" %d subscribers on %d interviews: %d posts, %d of %d deliveries (%d duplicated); delivery %s; post %s; delivery after the post's acknowledgement %s; errors %d%s; %.1f database transactions and %.2f live-feed reads per post; %s.",
			l.SubscribersConnected, l.Interviews, l.Posts, l.Delivered, l.Expected, l.Duplicates, sumText(l.Latency), sumText(l.Post), sumText(l.AfterAck), l.Errors, errText(l.FirstError),
			l.TxPerPost, l.ReadsPerPost, poolText(l.Pool))
	}
	w("\n\n")

	w("**5. Scale.** %s interviews of %d tenants started on the fake Fly API (no processes); each synthetic VM keeps its own ", thousands(float64(r.ScaleCfg.Interviews)), r.ScaleCfg.Tenants)
	w("keep-alive connection to the controller, as a real one does, heartbeats every `HEARTBEAT_INTERVAL=%s` and posts one segment every %s. ", r.ScaleCfg.HeartbeatInterval, r.ScaleCfg.SegmentEvery)
	w("The VMs report ready at once but stay silent until the last one is ready, so that the load does not slow the 10,000 starts; ")
	w("`HEARTBEAT_TIMEOUT=10m` keeps the first ones alive meanwhile (and through the burst of first heartbeats, each a transaction, when they are released); ")
	w("`HEARTBEAT_PERSIST=7.5s` is what the default 30 s timeout gives (a VM's heartbeat is written when the stored one is that old, its stats changed or it went quiet; otherwise only its session's status is read). ")
	w("Once all are ready, reconcile passes are watched for %s while the VMs are still quiet (the pass's own cost, the fake's rendering of the list included; the first pass to end is not counted, it may have begun during the starts); then the VMs are released, and once every first heartbeat was answered, ", r.ScaleCfg.QuietWindow)
	w("after %s of settling, over %s: the controller's resident memory (VmRSS, highest sample) from /proc/<pid>/status, ", r.ScaleCfg.Settle, r.ScaleCfg.Window)
	w("its CPU time (utime + stime from /proc/<pid>/stat) per second of wall time, and each reconcile pass's duration ")
	w("(`interview_reconciler_pass_duration_seconds`, scraped every 2 s; several passes between two scrapes share the growth evenly) with `RECONCILE_INTERVAL=%s`. A pass lists the app's machines ", r.ScaleCfg.ReconcileInterval)
	w("from the fake Fly API and every live interview from PostgreSQL, and checks each.")
	if s := r.Scale; s != nil {
		w(" Controller: %s. All started (202 then ready) in %s; peak RSS (VmHWM) %.0f MiB; goroutines %.0f, open fds %.0f; ",
			settingsText(s.Settings), s.StartAll.Round(time.Second), mib(s.PeakRSS), s.Goroutines, s.OpenConns)
		w("every VM's first heartbeat answered %s after their release; ", s.FirstBeats.Round(time.Second))
		w("passes with the VMs quiet %s, under load %s; failed interviews %d; synthetic VM errors %d%s. ", durList(s.QuietPasses), durList(s.Passes), s.Failed, s.VMErrors, errText(s.LastVMError))
		w("Of a pass, the list call to the fake Fly API (%s machines in Fly's summary form, rendered by the fake in the harness process, beside the synthetic VMs) took %.0f ms on average with the VMs quiet, %.0f ms under load. ",
			thousands(float64(s.Ready)), ms(s.QuietListCall), ms(s.ListCall))
		w("Database transactions: %.1f per start, %s/s in the window. ", s.TxPerStart, thousands(s.TxPerSecond))
		w("CPU over the window: controller %.2f cores; PostgreSQL ", s.CPU)
		if s.PGCPUErr != "" {
			w("not measured (%s)", oneLine(s.PGCPUErr))
		} else {
			w("%.2f cores (the whole cluster: utime + stime of the postmaster and each of its children from /proc, plus the reaped children's cutime + cstime)", s.PGCPU)
		}
		w("; the synthetic VMs run in the harness process and are not counted.")
	}
	w("\n\n")

	w("**7. Scheduled start.** The fake Fly API with a %s create delay (placement and image pull) and a %s boot. ", r.ScheduledCfg.CreateDelay, r.ScheduledCfg.BootDelay)
	w("Warm: %d interviews scheduled a minute ahead (`PREWARM_LEAD=10m`), each pre-warmed (created with `skip_launch`), then started one at a time, `POST /start?wait=60` until ready. ", r.ScheduledCfg.Samples)
	w("Boot floor: a machine created with `skip_launch` beforehand, then started directly through the flymachines client until its VM reports ready to a stand-in controller. ")
	w("Cold: the same start of interviews without a schedule (create and boot).")
	if sc := r.Scheduled; sc != nil {
		w(" Warm %s; floor %s; cold %s.", sumText(sc.Warm), sumText(sc.Floor), sumText(sc.Cold))
	}
	w("\n\n")

	w("**6. Local provider.** `PROVIDER=local`: each interview is a real sessionvm child process of the controller. ")
	w("%d starts one at a time (alternating with the floor, 2 warm-up pairs dropped), then %d rounds of %d at once, each round next to a round of the floor, ", r.LocalCfg.Sequential, max(r.LocalCfg.Rounds, 1), r.LocalCfg.Concurrent)
	w("which goes first alternating (a round's VMs are stopped before the next); `POST /start?wait=60` until ready. ")
	w("Floor (bare VM): sessionvm started directly with its listener inherited as fd 3, as the provider does, reporting ready to the ")
	w("stand-in controller. Memory: VmRSS of each of the concurrent VMs, read from /proc after %s (ready, heartbeating, no browser connected).", r.LocalCfg.Settle)
	if l := r.Local; l != nil {
		w(" Sequential: ours %s, floor %s. Concurrent: ours %s, floor %s; p50 ratio per round %s. ",
			sumText(l.Sequential), sumText(l.FloorSequential), sumText(l.Concurrent), sumText(l.FloorParallel), ratiosText(l.RoundRatios))
		w("Where a concurrent start's time goes (mean from the start request until the phase ended, interview_interview_start_phase_seconds): %s; ", phasesText(l.Phases))
		w("%.1f pool acquires per start: %s. Peak RSS (VmHWM) of a VM %.1f MiB; failures %d%s.",
			l.PoolAcquiresPerStart, poolText(l.Pool), mib(l.VMPeak), l.Failures, errText(l.FirstError))
	}
	w("\n\n")
	w("**8. Webhooks.** One tenant registers a receiver (a real HTTP server in the harness, `WEBHOOK_ALLOW_PRIVATE=true`) for ")
	w("`interview.cancelled`; %d of its interviews are cancelled, %d at a time. Each cancel creates the delivery and its River job in ", r.WebhooksCfg.Interviews, r.WebhooksCfg.Concurrency)
	w("its own transaction; one controller works the queue. Latency: from the event's `timestamp` (taken in that transaction) to the ")
	w("receiver reading the message; throughput: messages received per second from the first cancel to the last message.")
	if wh := r.Webhooks; wh != nil {
		w(" Latency %s; %.0f msg/s; %d received, %d duplicates.", sumText(wh.Latency), wh.PerSecond, wh.Received, wh.Duplicate)
	}
	w("\n\n")
	w("**9. Insights.** One controller with `INSIGHTS=openai` whose `OPENAI_BASE_URL` is the Responses fake (`responsestest`, served by ")
	w("the harness, answering at once with an instance of the request's schema). %s interviews are started on the fake Fly API ", thousands(float64(r.InsightsCfg.Interviews+r.InsightsCfg.Sequential)))
	w("(synthetic VMs); each VM posts a transcript of %d segments (alternating interviewer and candidate) and then its end report, ", r.InsightsCfg.Segments)
	w("so each interview completes, and its analysis is enqueued, the way a real one is (the controller's transition hook, in the completing transaction). ")
	w("First %d of them complete one at a time, each after the last one's analysis was stored; then %s complete at once (%d end reports at a time). ",
		r.InsightsCfg.Sequential, thousands(float64(r.InsightsCfg.Interviews)), r.InsightsCfg.Concurrency)
	w("Times are PostgreSQL's: an analysis's row is created in the completing transaction (completion), River stamps its job when a worker takes it, ")
	w("and the row is stamped when its outcome is stored. Jobs per second = burst interviews ÷ (last stored − first completion). ")
	w("Limit: a plain openai-go client (SDK defaults, no retries) sending the very requests the controller sent to the same fake — ")
	w("one at a time for the round trip, and the burst's requests as many at a time as the controller's analysis workers for calls per second. ")
	w("Added latency = completion → stored minus the SDK round trip at the same percentile: River's pick-up, reading the interview, ")
	w("position and transcript, building the prompt and schema, verifying the answer and storing it.")
	if in := r.Insights; in != nil {
		w(" One at a time: completion → stored %s (completion → taken %s; taken → stored %s); SDK round trip %s. ",
			sumText(in.EndToEnd), sumText(in.SeqWait), sumText(in.SeqWork), sumText(in.Floor))
		w("Burst: %.0f jobs/s over %s (the end reports themselves took %s); ", in.PerSecond, in.Span.Round(time.Millisecond), in.Completing.Round(time.Millisecond))
		w("completion → taken %s; taken → stored %s; plain SDK %.0f calls/s. %d analyses ready, %d not, %d took more than one attempt.",
			sumText(in.Wait), sumText(in.Work), in.SDKPerSecond, in.Ready, in.NotReady, in.Retried)
	}
	w("\n\n")
}

func (r *Results) profileSection(w func(string, ...any)) {
	w("## Profile of the biggest gap\n\n")
	p := r.Profile
	if p == nil {
		w("Not profiled in this run.\n\n")
		return
	}
	w("Biggest gap (the profilable figure furthest from its target): **%s** (case %s). ", p.Figure, p.Case)
	w("The case was run again with the controller wired in-process (`bench.startInProcess`, which runs pkg/controller's Serve) ")
	w("under `runtime/pprof` for %.0f s; every goroutine the controller starts carries the pprof label `side=controller`, so the ", p.Seconds)
	focus := ""
	if p.Focus != "" {
		focus = " -focus='" + p.Focus + "'"
	}
	w("table below is the controller's share alone, by cumulative time (`go tool pprof -top -cum -tagfocus=side=controller%s %s`). ", focus, p.Path)
	w("The harness's load drivers and the fake Fly API are left out; PostgreSQL's own CPU is not in a Go profile at all.\n\n")
	if p.Err != nil {
		w("Profiling failed: `%s`\n\n", oneLine(p.Err.Error()))
		return
	}
	w("```\n%s```\n\n", p.Top)
}

func sumText(s Summary) string {
	if s.N == 0 {
		return "no samples"
	}
	return fmt.Sprintf("n=%d min %.1f / p50 %.1f / p99 %.1f / max %.1f ms", s.N, ms(s.Min), ms(s.P50), ms(s.P99), ms(s.Max))
}

func errText(s string) string {
	if s == "" {
		return ""
	}
	return fmt.Sprintf(" (first error: `%s`)", oneLine(s))
}

func durList(d []time.Duration) string {
	var parts []string
	for _, x := range d {
		parts = append(parts, fmt.Sprintf("%.0f ms", ms(x)))
	}
	return strings.Join(parts, ", ")
}

func poolText(p PoolStats) string {
	if p.Acquires == 0 {
		return "pool statistics unavailable"
	}
	return fmt.Sprintf("the controller's pool (%.0f connections) served %s acquires, %s (%.0f%%) of which waited for a free connection, %.1f ms on average",
		p.Max, thousands(p.Acquires), thousands(p.Waited), 100*p.Waited/p.Acquires, ms(p.AvgWait))
}

// liveShape describes one case 4 shape.
func liveShape(c LiveConfig) string {
	return fmt.Sprintf("%d live interviews with %d SSE subscribers (`GET /transcript/stream`, %d per interview), each interview's VM posting one segment every %s for %s",
		c.Interviews, c.Subscribers, c.Subscribers/max(1, c.Interviews), c.PostEvery, c.Duration)
}

// sizesText joins sizes as "20 and 200".
func sizesText(sizes []int) string {
	var parts []string
	for _, n := range sizes {
		parts = append(parts, fmt.Sprint(n))
	}
	if len(parts) <= 1 {
		return strings.Join(parts, "")
	}
	return strings.Join(parts[:len(parts)-1], ", ") + " and " + parts[len(parts)-1]
}
