package session

import (
	"testing"
	"time"
)

func TestTransitions(t *testing.T) {
	allowed := map[[2]State]bool{
		{StateScheduled, StateProvisioning}: true,
		{StateProvisioning, StateReady}:     true,
		{StateProvisioning, StateEnding}:    true,
		{StateReady, StateInProgress}:       true,
		{StateReady, StateEnding}:           true,
		{StateInProgress, StateEnding}:      true,
		{StateEnding, StateCompleted}:       true,
	}
	for _, from := range States {
		for _, to := range States {
			want := allowed[[2]State{from, to}] ||
				(!from.Terminal() && (to == StateFailed || to == StateCancelled))
			if got := CanTransition(from, to); got != want {
				t.Errorf("CanTransition(%s, %s) = %v, want %v", from, to, got, want)
			}
		}
	}
	if CanTransition("bogus", StateReady) || CanTransition(StateScheduled, "bogus") {
		t.Error("unknown states must not transition")
	}
}

func TestTransitionRecordsTimesAndReasons(t *testing.T) {
	now := time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC)
	iv := &Interview{Status: StateScheduled}
	if _, err := iv.Transition(StateCompleted, "", ActorUser, now); ErrorCode(err) != ECONFLICT {
		t.Fatalf("scheduled → completed: err = %v, want conflict", err)
	}
	if iv.Status != StateScheduled {
		t.Fatalf("a refused transition changed the status to %s", iv.Status)
	}
	ev, err := iv.Transition(StateProvisioning, "", ActorUser, now)
	if err != nil || ev.From != StateScheduled || ev.To != StateProvisioning || iv.StartedAt == nil {
		t.Fatalf("start: %+v %v %+v", ev, err, iv)
	}
	if _, err := iv.Transition(StateEnding, "made_up", ActorUser, now); err == nil {
		t.Fatal("unknown end reason accepted")
	}
	if _, err := iv.Transition(StateEnding, ReasonEndedByUser, ActorUser, now); err != nil {
		t.Fatal(err)
	}
	if _, err := iv.Transition(StateCompleted, "", ActorVM, now.Add(time.Minute)); err != nil {
		t.Fatal(err)
	}
	if iv.EndReason == nil || *iv.EndReason != ReasonEndedByUser || iv.EndedAt == nil || !iv.Status.Terminal() {
		t.Fatalf("completed: %+v", iv)
	}
	if _, err := iv.Transition(StateCancelled, "", ActorUser, now); err == nil {
		t.Fatal("a terminal state changed")
	}
	c := &Interview{Status: StateReady}
	if _, err := c.Transition(StateCancelled, "", ActorUser, now); err != nil || *c.EndReason != ReasonCancelled {
		t.Fatalf("cancel: %v %+v", err, c)
	}
}

func TestMachineName(t *testing.T) {
	got := MachineName("hybrid", "3F2A9C1E-0000-4000-8000-000000000000", "7b4d0e5f-9a12-4bcd-8000-000000000000")
	if want := "interview-hybrid-3f2a9c1e-7b4d0e5f9a12"; got != want {
		t.Fatalf("MachineName = %q, want %q", got, want)
	}
	if len(got) > 63 {
		t.Fatalf("name longer than 63: %d", len(got))
	}
}
