package controller

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/google/uuid"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/interviewvm/controlplane/pkg/postgres"
	"github.com/interviewvm/controlplane/pkg/provision"
	"github.com/interviewvm/controlplane/pkg/session"
)

// The operator CLI: `controller sessions …` and `controller machines …`.
// Each command reads the controller's own configuration (environment and
// the same flags as serve), works on the database in the system scope (it
// crosses tenants) and on the machine provider, and prints a table, or
// JSON with --json.

const cliUsage = `Usage:
  controller sessions list [--status S] [--tenant T] [--limit N] [--cursor C] [--json]
  controller sessions show <id> [--json]      the interview, its timeline and phase durations
  controller sessions end <id> [--wait D]     end gracefully (the VM flushes its transcript)
  controller sessions cancel <id> [--wait D]  cancel in any non-terminal state, destroy its machine
  controller machines list [--prewarmed] [--json]
                                              the provider's machines and the session of each
                                              (--prewarmed: only those created ahead of a scheduled interview)
  controller machines gc --dry-run|--apply [--json]
                                              destroy machines whose session is terminal or unknown
  controller webhooks failures <endpoint-id> [--limit N] [--json]
                                              an endpoint's latest deliveries whose last attempt failed
  controller webhooks receive [--listen ADDR] [--api URL] [--token T]
                                              development receiver: registers itself for the token's
                                              tenant, prints each verified event, unregisters on exit

Except for receive, every setting of "controller --help" applies (DATABASE_URL, PROVIDER, FLY_*, …),
from the environment or as a flag.
`

// cliCommand is one operator subcommand.
type cliCommand struct {
	args  string // positional arguments, for usage
	flags func(fs *flag.FlagSet, o *cliOptions)
	run   func(c *cli, ctx context.Context, args []string) error
}

// cliOptions are the subcommands' own flags.
type cliOptions struct {
	json           bool
	status, tenant string
	limit          int
	cursor         string
	wait           time.Duration
	dryRun, apply  bool
	prewarmed      bool
}

var cliCommands = map[string]map[string]cliCommand{
	"sessions": {
		"list": {flags: func(fs *flag.FlagSet, o *cliOptions) {
			fs.StringVar(&o.status, "status", "", "only interviews in this state ("+statesList()+")")
			fs.StringVar(&o.tenant, "tenant", "", "only this tenant's interviews (UUID)")
			fs.IntVar(&o.limit, "limit", 50, "interviews per page (1-1000)")
			fs.StringVar(&o.cursor, "cursor", "", "page to show: the next cursor a previous list printed")
		}, run: (*cli).sessionsList},
		"show": {args: "<id>", run: (*cli).sessionsShow},
		"end": {args: "<id>", flags: func(fs *flag.FlagSet, o *cliOptions) {
			fs.DurationVar(&o.wait, "wait", 0, "wait up to this long for the interview to reach a terminal state")
		}, run: (*cli).sessionsEnd},
		"cancel": {args: "<id>", flags: func(fs *flag.FlagSet, o *cliOptions) {
			fs.DurationVar(&o.wait, "wait", 0, "wait up to this long for its machine to be destroyed")
		}, run: (*cli).sessionsCancel},
	},
	"machines": {
		"list": {flags: func(fs *flag.FlagSet, o *cliOptions) {
			fs.BoolVar(&o.prewarmed, "prewarmed", false, "only machines pre-warmed for a scheduled interview")
		}, run: (*cli).machinesList},
		"gc": {flags: func(fs *flag.FlagSet, o *cliOptions) {
			fs.BoolVar(&o.dryRun, "dry-run", false, "only show what would be destroyed")
			fs.BoolVar(&o.apply, "apply", false, "destroy them")
		}, run: (*cli).machinesGC},
	},
	"webhooks": {
		"failures": {args: "<endpoint-id>", flags: func(fs *flag.FlagSet, o *cliOptions) {
			fs.IntVar(&o.limit, "limit", 20, "deliveries to show (1-1000)")
		}, run: (*cli).webhooksFailures},
	},
}

// cli is one run of an operator subcommand.
type cli struct {
	cfg    Config
	opts   cliOptions
	logger *slog.Logger
	out    io.Writer
	db     *postgres.DB
}

// runCLI runs `controller sessions …` and `controller machines …`; group is
// "sessions" or "machines", args what follows it.
func runCLI(ctx context.Context, group string, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	cmds, ok := cliCommands[group]
	if !ok {
		return fmt.Errorf("unknown command %q", group)
	}
	if len(args) == 0 || strings.HasPrefix(args[0], "-") {
		fmt.Fprint(stderr, cliUsage)
		if len(args) > 0 && (args[0] == "-h" || args[0] == "--help" || args[0] == "-help") {
			return flag.ErrHelp
		}
		return fmt.Errorf("controller %s: missing subcommand", group)
	}
	name := group + " " + args[0]
	cmd, ok := cmds[args[0]]
	if !ok {
		fmt.Fprint(stderr, cliUsage)
		return fmt.Errorf("controller %s: unknown subcommand %q", group, args[0])
	}

	// The configuration: defaults and environment as serve reads them,
	// then every setting's flag, then the subcommand's own flags.
	cfg, err := LoadConfig("controller "+name, nil, getenv, stderr)
	if err != nil {
		return err
	}
	if getenv("LOG_LEVEL") == "" {
		cfg.LogLevel = "warn" // a command's output is its answer; --log-level=info shows more
	}
	c := &cli{cfg: cfg, out: stdout}
	fs := flag.NewFlagSet("controller "+name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	for _, s := range settings(&c.cfg) {
		fs.Func(flagName(s.env), s.help, s.set)
	}
	fs.BoolVar(&c.opts.json, "json", false, "print JSON instead of a table")
	if cmd.flags != nil {
		cmd.flags(fs, &c.opts)
	}
	fs.Usage = func() {
		fmt.Fprintf(stderr, "Usage: controller %s %s [flags]\n\n", name, cmd.args)
		fs.VisitAll(func(f *flag.Flag) {
			if !isSetting(f.Name) {
				fmt.Fprintf(stderr, "  --%-10s %s\n", f.Name, f.Usage)
			}
		})
		fmt.Fprintln(stderr, "\nand every setting of \"controller --help\".")
	}
	pos, err := parseInterspersed(fs, args[1:])
	if err != nil {
		return err
	}
	want := strings.Count(cmd.args, "<")
	if len(pos) != want {
		fs.Usage()
		return fmt.Errorf("controller %s: want %d argument(s) %s, got %d", name, want, cmd.args, len(pos))
	}
	if c.logger, err = NewLogger(c.cfg, stderr); err != nil {
		return err
	}
	if c.cfg.DatabaseURL == "" {
		return errors.New("DATABASE_URL is required")
	}
	c.db, err = postgres.Open(ctx, c.cfg.DatabaseURL, c.logger.With("component", "postgres"))
	if err != nil {
		return err
	}
	defer c.db.Close()
	return cmd.run(c, ctx, pos)
}

// isSetting reports whether a flag is one of the configuration's.
func isSetting(name string) bool {
	var cfg Config
	for _, s := range settings(&cfg) {
		if flagName(s.env) == name {
			return true
		}
	}
	return false
}

// parseInterspersed parses flags anywhere among args and returns the
// positional arguments: `sessions show <id> --json` works too.
func parseInterspersed(fs *flag.FlagSet, args []string) ([]string, error) {
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			return nil, err
		}
		args = fs.Args()
		if len(args) == 0 {
			return pos, nil
		}
		if args[0] == "--" {
			return append(pos, args[1:]...), nil
		}
		pos = append(pos, args[0])
		args = args[1:]
	}
}

func statesList() string {
	s := make([]string, len(session.States))
	for i, st := range session.States {
		s[i] = string(st)
	}
	return strings.Join(s, ", ")
}

// interviewID checks a command-line interview id.
func interviewID(s string) (string, error) {
	id, err := uuid.Parse(s)
	if err != nil || len(s) != 36 {
		return "", fmt.Errorf("interview id must be a UUID, not %q", s)
	}
	return id.String(), nil
}

func (c *cli) printJSON(v any) error {
	enc := json.NewEncoder(c.out)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

func (c *cli) table() *tabwriter.Writer { return tabwriter.NewWriter(c.out, 0, 0, 2, ' ', 0) }

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func timeOrDash(t *time.Time) string {
	if t == nil {
		return "-"
	}
	return t.UTC().Format(time.RFC3339)
}

func endReason(iv session.Interview) string {
	if iv.EndReason == nil {
		return ""
	}
	return string(*iv.EndReason)
}

// --- sessions ---------------------------------------------------------------

func (c *cli) sessionsList(ctx context.Context, _ []string) error {
	if c.opts.limit < 1 || c.opts.limit > 1000 {
		return fmt.Errorf("--limit must be 1 to 1000, not %d", c.opts.limit)
	}
	items, next, err := c.db.ListAllInterviews(ctx, postgres.InterviewFilter{
		Status: session.State(c.opts.status), TenantID: c.opts.tenant,
	}, session.Page{Limit: c.opts.limit, Cursor: c.opts.cursor})
	if err != nil {
		return err
	}
	if c.opts.json {
		if items == nil {
			items = []session.Interview{}
		}
		return c.printJSON(map[string]any{"items": items, "next_cursor": next})
	}
	tw := c.table()
	fmt.Fprintln(tw, "ID\tTENANT\tSTATUS\tEND REASON\tMACHINE\tCREATED")
	for _, iv := range items {
		machine := ""
		if iv.Machine != nil {
			machine = iv.Machine.Name + " (" + orDash(iv.Machine.State) + ")"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", iv.ID, iv.TenantID, iv.Status, orDash(endReason(iv)),
			orDash(machine), iv.CreatedAt.UTC().Format(time.RFC3339))
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	if next != "" {
		fmt.Fprintf(c.out, "more: --cursor %s\n", next)
	}
	return nil
}

type sessionDetail struct {
	Interview session.Interview `json:"interview"`
	// StartSeconds is start request to ready, when it got there.
	StartSeconds *float64        `json:"start_seconds"`
	Events       []session.Event `json:"events"`
	Phases       []session.Phase `json:"phases"`
}

func (c *cli) sessionsShow(ctx context.Context, args []string) error {
	id, err := interviewID(args[0])
	if err != nil {
		return err
	}
	iv, err := c.db.Interview(ctx, session.SystemScope(), id)
	if err != nil {
		return err
	}
	events, err := c.db.Events(ctx, session.SystemScope(), id)
	if err != nil {
		return err
	}
	d := sessionDetail{Interview: iv, Events: events, Phases: session.Phases(iv, events, time.Now())}
	if iv.StartedAt != nil && iv.ReadyAt != nil {
		s := iv.ReadyAt.Sub(*iv.StartedAt).Seconds()
		d.StartSeconds = &s
	}
	if c.opts.json {
		return c.printJSON(d)
	}
	tw := c.table()
	status := string(iv.Status)
	if r := endReason(iv); r != "" {
		status += " (" + r + ")"
	}
	fmt.Fprintf(tw, "interview\t%s\n", iv.ID)
	fmt.Fprintf(tw, "tenant\t%s\n", iv.TenantID)
	fmt.Fprintf(tw, "candidate\t%s\n", iv.CandidateID)
	fmt.Fprintf(tw, "position\t%s\n", iv.PositionID)
	fmt.Fprintf(tw, "status\t%s\n", status)
	fmt.Fprintf(tw, "architecture\t%s, max %s\n", iv.Architecture, iv.MaxDuration())
	if m := iv.Machine; m != nil {
		fmt.Fprintf(tw, "machine\t%s %s (%s, %s, %s)\n", orDash(m.ID), m.Name, orDash(m.Provider), orDash(m.Region), orDash(m.State))
	} else {
		fmt.Fprintf(tw, "machine\t-\n")
	}
	fmt.Fprintf(tw, "created\t%s\n", iv.CreatedAt.UTC().Format(time.RFC3339))
	fmt.Fprintf(tw, "started\t%s\n", timeOrDash(iv.StartedAt))
	ready := timeOrDash(iv.ReadyAt)
	if d.StartSeconds != nil {
		ready += fmt.Sprintf(" (start took %s)", seconds(*d.StartSeconds))
	}
	fmt.Fprintf(tw, "ready\t%s\n", ready)
	fmt.Fprintf(tw, "ended\t%s\n", timeOrDash(iv.EndedAt))
	if err := tw.Flush(); err != nil {
		return err
	}

	fmt.Fprintln(c.out, "\ntimeline:")
	tw = c.table()
	fmt.Fprintln(tw, "AT\tTRANSITION\tREASON\tACTOR")
	for _, ev := range events {
		fmt.Fprintf(tw, "%s\t%s → %s\t%s\t%s\n", ev.At.UTC().Format("2006-01-02T15:04:05.000Z"), ev.From, ev.To, orDash(ev.Reason), ev.Actor)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	fmt.Fprintln(c.out, "\nphases:")
	tw = c.table()
	fmt.Fprintln(tw, "STATE\tDURATION")
	for _, p := range d.Phases {
		dur := seconds(p.Seconds)
		if p.Ongoing {
			dur += " so far"
		}
		fmt.Fprintf(tw, "%s\t%s\n", p.State, dur)
	}
	return tw.Flush()
}

// seconds formats a duration given in seconds, to the millisecond.
func seconds(s float64) string {
	return time.Duration(s * float64(time.Second)).Round(time.Millisecond).String()
}

// lifecycle returns the lifecycle service end and cancel go through, and
// the function that stops it (waiting for the machine destroys it began).
func (c *cli) lifecycle() (*provision.Service, func(), error) {
	machines, closeMachines, err := newMachines(c.cfg, c.logger, prometheus.NewRegistry())
	if err != nil {
		return nil, nil, err
	}
	svc := provision.New(provision.Config{
		Provider: c.cfg.Provider, Realtime: c.cfg.Realtime, Region: c.cfg.FlyRegion,
		HeartbeatInterval: c.cfg.HeartbeatInterval,
	}, c.db, machines, c.logger.With("component", "provision"), nil)
	return svc, func() {
		svc.Close()
		if err := closeMachines(); err != nil {
			c.logger.Warn("close machine provider", "error", err)
		}
	}, nil
}

// changeSession ends or cancels an interview of whatever tenant it is.
func (c *cli) changeSession(ctx context.Context, arg, verb string,
	change func(svc *provision.Service, scope session.Scope, id string) (session.Interview, error),
	done func(session.Interview) bool) error {
	id, err := interviewID(arg)
	if err != nil {
		return err
	}
	iv, err := c.db.Interview(ctx, session.SystemScope(), id)
	if err != nil {
		return err
	}
	svc, stop, err := c.lifecycle()
	if err != nil {
		return err
	}
	iv, err = change(svc, session.TenantScope(iv.TenantID), id)
	stop() // waits for a machine destroy the change began
	if err != nil {
		return fmt.Errorf("%s interview %s: %w", verb, id, err)
	}
	if c.opts.wait > 0 && !done(iv) {
		wctx, cancel := context.WithTimeout(ctx, c.opts.wait)
		defer cancel()
		for !done(iv) {
			select {
			case <-wctx.Done():
				return fmt.Errorf("%s interview %s: still %s after %s", verb, id, iv.Status, c.opts.wait)
			case <-time.After(200 * time.Millisecond):
			}
			if iv, err = c.db.Interview(ctx, session.SystemScope(), id); err != nil {
				return err
			}
		}
	}
	if c.opts.json {
		return c.printJSON(iv)
	}
	status := string(iv.Status)
	if r := endReason(iv); r != "" {
		status += " (" + r + ")"
	}
	machine := ""
	if iv.Machine != nil {
		machine = ", machine " + iv.Machine.Name + " " + orDash(iv.Machine.State)
	}
	fmt.Fprintf(c.out, "%s: %s%s\n", iv.ID, status, machine)
	return nil
}

func (c *cli) sessionsEnd(ctx context.Context, args []string) error {
	return c.changeSession(ctx, args[0], "end",
		func(svc *provision.Service, scope session.Scope, id string) (session.Interview, error) {
			return svc.End(ctx, scope, id)
		},
		func(iv session.Interview) bool { return iv.Status.Terminal() })
}

func (c *cli) sessionsCancel(ctx context.Context, args []string) error {
	return c.changeSession(ctx, args[0], "cancel",
		func(svc *provision.Service, scope session.Scope, id string) (session.Interview, error) {
			return svc.Cancel(ctx, scope, id)
		},
		func(iv session.Interview) bool {
			return iv.Status.Terminal() && (iv.Machine == nil || iv.Machine.State == session.MachineDestroyed)
		})
}

// --- machines ---------------------------------------------------------------

// errLocalMachines explains why the machine commands need a provider that
// another process can see.
var errLocalMachines = errors.New("PROVIDER=local: the local provider's machines are child processes of the " +
	"controller that serves them, invisible to another process; that controller's reconciler destroys " +
	"orphans, and stopping it stops all of them (the machine commands work with PROVIDER=fly)")

// machineRow is one machine and the interview it belongs to.
type machineRow struct {
	Machine session.Machine `json:"machine"`
	// SessionID is the interview_session_id of the machine's metadata.
	SessionID     string        `json:"session_id"`
	TenantID      string        `json:"tenant_id,omitempty"`
	SessionStatus session.State `json:"session_status,omitempty"`
	// Orphan: the machine's session is terminal or unknown, so nothing
	// needs the machine.
	Orphan bool `json:"orphan"`
	// Prewarmed: the machine was created ahead of its scheduled interview
	// and waits, not booted, for the start.
	Prewarmed bool   `json:"prewarmed"`
	Note      string `json:"note,omitempty"`
	// Action is what gc did: "would destroy", "destroyed" or "error: …".
	Action string `json:"action,omitempty"`
}

// machineRows lists the provider's machines with their sessions.
func (c *cli) machineRows(ctx context.Context) ([]machineRow, provision.Machines, func(), error) {
	if c.cfg.Provider == "local" {
		return nil, nil, nil, errLocalMachines
	}
	machines, closeMachines, err := newMachines(c.cfg, c.logger, prometheus.NewRegistry())
	if err != nil {
		return nil, nil, nil, err
	}
	stop := func() {
		if err := closeMachines(); err != nil {
			c.logger.Warn("close machine provider", "error", err)
		}
	}
	list, err := machines.List(ctx)
	if err != nil {
		stop()
		return nil, nil, nil, err
	}
	ids := make([]string, 0, len(list))
	for _, m := range list {
		ids = append(ids, m.SessionID)
	}
	// Sessions are read after machines: a machine created in between
	// belongs to a session this read sees, so it is never taken for an
	// orphan.
	sessions, err := c.db.InterviewsByID(ctx, ids)
	if err != nil {
		stop()
		return nil, nil, nil, err
	}
	rows := make([]machineRow, 0, len(list))
	for _, m := range list {
		r := machineRow{Machine: m, SessionID: m.SessionID}
		iv, ok := sessions[m.SessionID]
		switch {
		case m.SessionID == "":
			r.Orphan, r.Note = true, "no interview_session_id in its metadata"
		case !ok:
			r.Orphan, r.Note = true, "no such interview"
		default:
			r.TenantID, r.SessionStatus = iv.TenantID, iv.Status
			switch {
			case iv.Status.Terminal():
				r.Orphan, r.Note = true, "interview is "+string(iv.Status)
			case iv.Machine != nil && iv.Machine.ID != "" && iv.Machine.ID != m.ID:
				r.Note = "interview runs on machine " + iv.Machine.ID + " (left to the reconciler)"
			case iv.Status == session.StateScheduled && iv.PrewarmedAt != nil && iv.Machine != nil && iv.Machine.ID == m.ID:
				r.Prewarmed = true
				r.Note = "pre-warmed at " + iv.PrewarmedAt.UTC().Format(time.RFC3339)
				if iv.ScheduledAt != nil {
					r.Note += " for " + iv.ScheduledAt.UTC().Format(time.RFC3339)
				}
			case iv.Status == session.StateScheduled:
				r.Note = "interview not started"
			}
		}
		rows = append(rows, r)
	}
	return rows, machines, stop, nil
}

func (c *cli) printMachines(rows []machineRow, withAction bool) error {
	if c.opts.json {
		return c.printJSON(rows)
	}
	tw := c.table()
	head := "MACHINE\tNAME\tSTATE\tREGION\tSESSION\tTENANT\tSESSION STATUS\tNOTE"
	if withAction {
		head += "\tACTION"
	}
	fmt.Fprintln(tw, head)
	for _, r := range rows {
		line := fmt.Sprintf("%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s", r.Machine.ID, r.Machine.Name, orDash(r.Machine.State),
			orDash(r.Machine.Region), orDash(r.SessionID), orDash(r.TenantID), orDash(string(r.SessionStatus)), orDash(r.Note))
		if withAction {
			line += "\t" + r.Action
		}
		fmt.Fprintln(tw, line)
	}
	return tw.Flush()
}

func (c *cli) machinesList(ctx context.Context, _ []string) error {
	rows, _, stop, err := c.machineRows(ctx)
	if err != nil {
		return err
	}
	stop()
	if c.opts.prewarmed {
		rows = slices.DeleteFunc(rows, func(r machineRow) bool { return !r.Prewarmed })
	}
	return c.printMachines(rows, false)
}

func (c *cli) machinesGC(ctx context.Context, _ []string) error {
	if c.opts.dryRun == c.opts.apply {
		return errors.New("machines gc: give exactly one of --dry-run and --apply")
	}
	rows, machines, stop, err := c.machineRows(ctx)
	if err != nil {
		return err
	}
	defer stop()
	var orphans []machineRow
	var failed int
	for _, r := range rows {
		if !r.Orphan {
			continue
		}
		r.Action = "would destroy"
		if c.opts.apply {
			if err := machines.Destroy(ctx, r.Machine.ID); err != nil {
				r.Action = "error: " + err.Error()
				failed++
			} else {
				r.Action = "destroyed"
				c.logger.Info("destroyed orphaned machine", "machine_id", r.Machine.ID, "machine_name", r.Machine.Name,
					"session_id", r.SessionID, "reason", r.Note)
			}
		}
		orphans = append(orphans, r)
	}
	if orphans == nil {
		orphans = []machineRow{}
	}
	if err := c.printMachines(orphans, true); err != nil {
		return err
	}
	if !c.opts.json {
		fmt.Fprintf(c.out, "%d machine(s), %d orphaned\n", len(rows), len(orphans))
	}
	if failed > 0 {
		return fmt.Errorf("machines gc: %d destroy(s) failed", failed)
	}
	return nil
}
