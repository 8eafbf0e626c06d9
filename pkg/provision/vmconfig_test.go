package provision

import (
	"context"
	"crypto/sha256"
	"encoding/json"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/interviewvm/controlplane/pkg/postgres/postgrestest"
	"github.com/interviewvm/controlplane/pkg/session"
)

// TestVMConfigCarriesTheRealtimeSettings checks that a VM's configuration
// hands it the controller's realtime model, voice and transcription model
// (REALTIME_MODEL, REALTIME_VOICE, TRANSCRIBE_MODEL), and that a VM
// without its session's token learns nothing.
func TestVMConfigCarriesTheRealtimeSettings(t *testing.T) {
	db, _ := postgrestest.New(t)
	ctx := context.Background()
	svc := New(Config{Provider: "mem", ControllerURL: "http://x", Realtime: session.RealtimeOpenAI,
		RealtimeModel: "gpt-realtime-test", RealtimeVoice: "cedar", TranscribeModel: "gpt-4o-mini-transcribe",
		SyntheticTurn: 250 * time.Millisecond, HeartbeatInterval: time.Second},
		db, newMem(), slog.New(slog.DiscardHandler), nil)
	t.Cleanup(svc.Close)

	scope := session.TenantScope(uuid.NewString())
	pos, err := db.CreatePosition(ctx, scope, session.PositionRecord{Title: "T", Competencies: []session.Competency{{Name: "Go", Weight: 1}}})
	if err != nil {
		t.Fatal(err)
	}
	cand, err := db.CreateCandidate(ctx, scope, session.Candidate{FullName: "A", Email: "a@b.c"})
	if err != nil {
		t.Fatal(err)
	}
	iv, err := db.CreateInterview(ctx, scope, session.Interview{CandidateID: cand.ID, PositionID: pos.ID, Architecture: "hybrid", MaxDurationS: 600})
	if err != nil {
		t.Fatal(err)
	}
	const token = "the-vm-token"
	hash := sha256.Sum256([]byte(token))
	if _, err := db.UpdateInterview(ctx, scope, iv.ID, func(cur *session.Interview) ([]session.Event, error) {
		cur.TokenHash = hash[:]
		ev, err := cur.Transition(session.StateProvisioning, "", session.ActorUser, time.Now())
		return []session.Event{ev}, err
	}); err != nil {
		t.Fatal(err)
	}

	if _, err := svc.VMConfig(ctx, iv.ID, "another-token"); session.ErrorCode(err) != session.EUNAUTHENTICATED {
		t.Fatalf("VMConfig with a wrong token: %v, want unauthenticated", err)
	}
	cfg, err := svc.VMConfig(ctx, iv.ID, token)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.RealtimeModel != "gpt-realtime-test" || cfg.RealtimeVoice != "cedar" || cfg.TranscribeModel != "gpt-4o-mini-transcribe" {
		t.Errorf("VM config realtime settings = %q %q %q, want the service's", cfg.RealtimeModel, cfg.RealtimeVoice, cfg.TranscribeModel)
	}
	if cfg.Realtime != session.RealtimeOpenAI || cfg.SyntheticTurnMS != 250 || cfg.SessionID != iv.ID || cfg.Position.Title != "T" {
		t.Errorf("VM config = %+v", cfg)
	}
}

// TestStartedMachineCarriesItsConfig checks that the machine of a started
// interview is created with its VM's configuration in the environment
// (so the VM reports ready without fetching it), the same configuration
// the VM would fetch, without the session token in it; and that a
// pre-warm's machine, created before the interview starts, is not.
func TestStartedMachineCarriesItsConfig(t *testing.T) {
	db, _ := postgrestest.New(t)
	ctx := context.Background()
	machines := newMem()
	svc := New(Config{Provider: "mem", ControllerURL: "http://x", Realtime: session.RealtimeSimulated,
		HeartbeatInterval: 1500 * time.Millisecond, IdleTimeout: time.Minute},
		db, machines, slog.New(slog.DiscardHandler), nil)
	t.Cleanup(svc.Close)

	scope := session.TenantScope(uuid.NewString())
	pos, err := db.CreatePosition(ctx, scope, session.PositionRecord{Title: "Data engineer", Description: "Pipelines",
		Competencies: []session.Competency{{Name: "SQL", Weight: 1}}})
	if err != nil {
		t.Fatal(err)
	}
	cand, err := db.CreateCandidate(ctx, scope, session.Candidate{FullName: "A", Email: "a@b.c"})
	if err != nil {
		t.Fatal(err)
	}
	iv, err := db.CreateInterview(ctx, scope, session.Interview{CandidateID: cand.ID, PositionID: pos.ID, Architecture: "hybrid", MaxDurationS: 900})
	if err != nil {
		t.Fatal(err)
	}
	if spec := svc.MachineSpec(iv, "pre-warm-token"); spec.Env[session.EnvSessionConfig] != "" {
		t.Errorf("a pre-warm's machine spec carries a configuration: %s", spec.Env[session.EnvSessionConfig])
	}

	started, err := svc.Start(ctx, scope, iv.ID, 0)
	if err != nil {
		t.Fatal(err)
	}
	var spec session.MachineSpec
	deadline := time.Now().Add(30 * time.Second)
	for {
		machines.mu.Lock()
		n := len(machines.specs)
		if n > 0 {
			spec = machines.specs[0]
		}
		machines.mu.Unlock()
		if n > 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("no machine created for the started interview")
		}
		time.Sleep(10 * time.Millisecond)
	}
	raw := spec.Env[session.EnvSessionConfig]
	if raw == "" {
		t.Fatalf("the started interview's machine has no %s: env keys %v", session.EnvSessionConfig, keys(spec.Env))
	}
	token := spec.Env[session.EnvSessionToken]
	if token == "" || strings.Contains(raw, token) {
		t.Fatalf("the configuration carries the session token (or there is none): %q", raw)
	}
	var got session.VMConfig
	if err := json.Unmarshal([]byte(raw), &got); err != nil {
		t.Fatal(err)
	}
	fetched, err := svc.VMConfig(ctx, iv.ID, token)
	if err != nil {
		t.Fatal(err)
	}
	// The row keeps microseconds; the start's own copy had nanoseconds.
	if d := got.Deadline.Sub(fetched.Deadline).Abs(); d > time.Millisecond {
		t.Errorf("deadline with the machine %v, fetched %v", got.Deadline, fetched.Deadline)
	}
	got.Deadline = fetched.Deadline
	if g, w := mustJSON(t, got), mustJSON(t, fetched); g != w {
		t.Errorf("configuration with the machine\n%s\nis not the one the VM would fetch\n%s", g, w)
	}
	if want := started.StartedAt.Add(15 * time.Minute); got.Deadline.Sub(want).Abs() > time.Millisecond {
		t.Errorf("deadline %v, want start + max duration %v", got.Deadline, want)
	}
	if got.Position.Title != "Data engineer" || got.HeartbeatIntervalMS != 1500 || got.IdleTimeoutMS != 60000 {
		t.Errorf("configuration = %+v", got)
	}
}

func keys(m map[string]string) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	return out
}

func mustJSON(t *testing.T, v any) string {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}
