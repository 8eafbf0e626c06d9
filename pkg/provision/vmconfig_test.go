package provision

import (
	"context"
	"crypto/sha256"
	"log/slog"
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
