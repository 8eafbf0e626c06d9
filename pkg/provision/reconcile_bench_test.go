package provision

import (
	"context"
	"testing"

	"github.com/interviewvm/controlplane/pkg/session"
)

// BenchmarkReconcilePass is one reconciler pass over 10,000 live
// interviews, each on its machine, listed in Fly's summary form (no
// session in the list): the database read and the per-session rules,
// without the provider's HTTP call.
//
//	go test -run '^$' -bench ReconcilePass -benchtime 5x ./pkg/provision/
func BenchmarkReconcilePass(b *testing.B) {
	const n = 10_000
	r := newRig(b, true)
	ctx := context.Background()
	proto := r.interview(session.StateProvisioning, session.StateReady)
	// Clone the ready interview n-1 times, each with its own machine.
	if _, err := r.db.Pool.Exec(ctx, `INSERT INTO interviews.interview_sessions
		SELECT (jsonb_populate_record(s, jsonb_build_object('id', gen_random_uuid(), 'machine_id', 'c' || g, 'machine_name', 'clone-' || g))).*
		FROM interviews.interview_sessions s, generate_series(2, $2) g WHERE s.id = $1`, proto.ID, n); err != nil {
		b.Fatal(err)
	}
	rows, err := r.db.Pool.Query(ctx, `SELECT id::text, machine_id, machine_name FROM interviews.interview_sessions WHERE id <> $1`, proto.ID)
	if err != nil {
		b.Fatal(err)
	}
	r.mem.mu.Lock()
	for rows.Next() {
		var id, mid, name string
		if err := rows.Scan(&id, &mid, &name); err != nil {
			b.Fatal(err)
		}
		r.mem.machines[mid] = session.Machine{ID: mid, Name: name, State: session.MachineStarted, SessionID: id}
	}
	r.mem.mu.Unlock()
	if err := rows.Err(); err != nil {
		b.Fatal(err)
	}
	b.ResetTimer()
	for b.Loop() {
		rep, err := r.rec.RunOnce(ctx)
		if err != nil {
			b.Fatal(err)
		}
		if rep.Sessions != n || rep.Machines != n || rep.OrphansDestroyed != 0 || len(rep.Failed) != 0 {
			b.Fatalf("pass = %+v, want %d sessions on %d machines and nothing to do", rep, n, n)
		}
	}
}
