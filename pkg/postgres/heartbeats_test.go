package postgres_test

import (
	"context"
	"encoding/json"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/interviewvm/controlplane/pkg/postgres"
	"github.com/interviewvm/controlplane/pkg/postgres/postgrestest"
	"github.com/interviewvm/controlplane/pkg/session"
)

// seedLive inserts n in-progress interviews of one tenant directly (the
// test cluster's superuser, below row-level security) and returns their
// ids.
func seedLive(t *testing.T, db *postgres.DB, n int) []string {
	t.Helper()
	ctx := context.Background()
	tenant := uuid.NewString()
	c, p := seed(t, db, tenant)
	rows, err := db.Pool.Query(ctx, `INSERT INTO interviews.interview_sessions (id, tenant_id, candidate_id, position_id, status, max_duration_s)
		SELECT gen_random_uuid(), $1, $2, $3, 'in_progress', 600 FROM generate_series(1, $4) RETURNING id::text`, tenant, c.ID, p.ID, n)
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	for rows.Next() {
		var id string
		if err := rows.Scan(&id); err != nil {
			t.Fatal(err)
		}
		ids = append(ids, id)
	}
	if err := rows.Err(); err != nil || len(ids) != n {
		t.Fatalf("seeded %d of %d: %v", len(ids), n, err)
	}
	return ids
}

// planWork sums, over every node of an EXPLAIN ANALYZE plan in JSON, the
// rows it produced and the rows its filters removed, times its loops: the
// rows the executor touched.
func planWork(node map[string]any) float64 {
	num := func(k string) float64 { f, _ := node[k].(float64); return f }
	loops := max(num("Actual Loops"), 1)
	w := (num("Actual Rows") + num("Rows Removed by Filter") + num("Rows Removed by Join Filter") + num("Rows Removed by Index Recheck")) * loops
	children, _ := node["Plans"].([]any)
	for _, c := range children {
		if m, ok := c.(map[string]any); ok {
			w += planWork(m)
		}
	}
	return w
}

// TestHeartbeatBatchWorkIsLinear: the statement that writes a batch of
// heartbeats touches a bounded number of rows per heartbeat, whatever
// plan the server picks. Joined to the batch's unnest and filtered by a
// second id array, it once ran as a nested loop over the whole unnest
// for every row: 8,000 heartbeats touched 77 million rows (15 s, holding
// the rows' locks).
func TestHeartbeatBatchWorkIsLinear(t *testing.T) {
	db, _ := postgrestest.New(t)
	ctx := context.Background()
	const n = 2000
	ids := seedLive(t, db, n)
	// EXECUTE takes its arguments as literals: a batch of n heartbeats.
	ats, lasts, zeros := make([]string, n), make([]string, n), make([]string, n)
	at := time.Now().UTC().Format(time.RFC3339Nano)
	for i := range ids {
		ats[i], lasts[i], zeros[i] = at, strconv.Itoa(i), "0"
	}
	lit := func(v []string) string { return "'{" + strings.Join(v, ",") + "}'" }
	args := strings.Join([]string{lit(ids), lit(ats), lit(lasts), lit(zeros), lit(zeros)}, ", ")
	tx, err := db.Pool.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = tx.Rollback(ctx) }()
	if _, err := tx.Exec(ctx, "SELECT set_config('role', 'interview_app', true), set_config('app.system_scope', 'on', true)"); err != nil {
		t.Fatal(err)
	}
	if _, err := tx.Exec(ctx, "ANALYZE interviews.interview_sessions"); err != nil {
		t.Fatal(err)
	}
	// The controller's statements are prepared once per connection: after
	// a few runs the server may plan them without looking at the
	// parameters (a generic plan), guessing ten rows for the unnest. Both
	// kinds of plan must stay linear.
	if _, err := tx.Exec(ctx, "PREPARE hb AS "+postgres.HeartbeatUpdate); err != nil {
		t.Fatal(err)
	}
	for _, mode := range []string{"force_custom_plan", "force_generic_plan"} {
		if _, err := tx.Exec(ctx, "SELECT set_config('plan_cache_mode', $1, true)", mode); err != nil {
			t.Fatal(err)
		}
		var out []byte
		if err := tx.QueryRow(ctx, "EXPLAIN (ANALYZE, FORMAT JSON) EXECUTE hb("+args+")").Scan(&out); err != nil {
			t.Fatal(err)
		}
		var plans []struct {
			Plan map[string]any `json:"Plan"`
		}
		if err := json.Unmarshal(out, &plans); err != nil || len(plans) != 1 {
			t.Fatalf("%s: plan %s: %v", mode, out, err)
		}
		work := planWork(plans[0].Plan)
		if work < n {
			t.Fatalf("%s: the plan touched %.0f rows for %d heartbeats: it did not update them (%s)", mode, work, n, out)
		}
		if work > 10*n {
			t.Fatalf("%s: the plan touched %.0f rows for %d heartbeats (over 10 per heartbeat): %s", mode, work, n, out)
		}
	}
}

// TestRecordHeartbeatsWritesEveryRowOfALargeBatch: a batch of thousands
// writes every live row once and returns each.
func TestRecordHeartbeatsWritesEveryRowOfALargeBatch(t *testing.T) {
	db, _ := postgrestest.New(t)
	ctx := context.Background()
	const n = 3000
	ids := seedLive(t, db, n)
	at := time.Now().Truncate(time.Microsecond)
	beats := make([]session.HeartbeatRecord, n)
	for i, id := range ids {
		beats[i] = session.HeartbeatRecord{ID: id, At: at, Stats: session.VMStats{LastSeq: int64(i)}}
	}
	got, err := db.RecordHeartbeats(ctx, beats)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != n {
		t.Fatalf("returned %d of %d live interviews", len(got), n)
	}
	var written, right int
	if err := db.Pool.QueryRow(ctx, `SELECT count(*) FILTER (WHERE last_heartbeat_at = $2),
			count(*) FILTER (WHERE last_heartbeat_at = $2 AND vm_last_seq = array_position($1::uuid[], id) - 1)
		FROM interviews.interview_sessions WHERE id = ANY($1::uuid[])`, ids, at).Scan(&written, &right); err != nil {
		t.Fatal(err)
	}
	if written != n || right != n {
		t.Fatalf("%d of %d rows carry the heartbeat, %d with their own stats", written, n, right)
	}
}

// TestHeartbeatStatesReadsLiveSessionsAndWritesNothing: the state of the
// live interviews among the ids, none of others; nothing is written, and
// a row another transaction holds is read without waiting.
func TestHeartbeatStatesReadsLiveSessionsAndWritesNothing(t *testing.T) {
	db, _ := postgrestest.New(t)
	ctx := context.Background()
	ids := seedLive(t, db, 3)
	if _, err := db.Pool.Exec(ctx, `UPDATE interviews.interview_sessions SET status = 'ending', end_reason = 'cancelled', token_hash = '\x0102'
		WHERE id = $1`, ids[1]); err != nil {
		t.Fatal(err)
	}
	if _, err := db.Pool.Exec(ctx, `UPDATE interviews.interview_sessions SET status = 'completed', end_reason = 'completed' WHERE id = $1`, ids[2]); err != nil {
		t.Fatal(err)
	}
	// Another transaction holds the first row.
	tx, err := db.Pool.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = tx.Rollback(ctx) }()
	if _, err := tx.Exec(ctx, `SELECT 1 FROM interviews.interview_sessions WHERE id = $1 FOR NO KEY UPDATE`, ids[0]); err != nil {
		t.Fatal(err)
	}
	var updated0 time.Time
	if err := db.Pool.QueryRow(ctx, `SELECT max(updated_at) FROM interviews.interview_sessions`).Scan(&updated0); err != nil {
		t.Fatal(err)
	}
	// The context only keeps a broken store from hanging the test.
	rctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	got, err := db.HeartbeatStates(rctx, append([]string{uuid.NewString(), "not-a-uuid"}, ids...))
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 || got[ids[0]].Status != session.StateInProgress || got[ids[0]].ID != ids[0] {
		t.Fatalf("got %+v, want the two live ones", got)
	}
	if st := got[ids[1]]; st.Status != session.StateEnding || st.EndReason == nil || *st.EndReason != session.ReasonCancelled || string(st.TokenHash) != "\x01\x02" {
		t.Fatalf("ending one: %+v", st)
	}
	var updated1 time.Time
	if err := db.Pool.QueryRow(ctx, `SELECT max(updated_at) FROM interviews.interview_sessions`).Scan(&updated1); err != nil {
		t.Fatal(err)
	}
	if !updated1.Equal(updated0) {
		t.Fatalf("a read wrote: updated_at %v → %v", updated0, updated1)
	}
}
