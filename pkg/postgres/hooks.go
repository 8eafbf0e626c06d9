package postgres

import (
	"context"
	"errors"
	"fmt"
	"slices"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/interviewvm/controlplane/pkg/session"
)

// TransitionHook runs inside the transaction that changes an interview's
// status: whatever it writes (a webhook delivery, an analysis job) commits
// with the change or not at all. iv is the interview after the change,
// from its status before; the interview's row is locked, but whether the
// change is already written when the hook runs depends on the path (the
// start and VM reports run hooks first, so the write and COMMIT share a
// round trip; a transcript batch runs them after): a hook takes the
// interview from iv, never reads it back. An error rolls the whole change
// back.
//
// Hooks run in the scope of the change: a tenant's transaction (role
// interview_app, app.tenant_id set) or the system scope (the internal
// API, the reconciler).
type TransitionHook func(ctx context.Context, tx pgx.Tx, iv session.Interview, from session.State) error

// OnTransition adds a hook run on every status change into one of the
// statuses to (every change when to is empty). Hooks are added while the
// controller is assembled, before it serves.
//
// Naming the statuses matters on the hot paths: a change into a status no
// hook wants is written and committed in one round trip, while one a hook
// wants keeps its transaction open for the hook's statements.
func (db *DB) OnTransition(h TransitionHook, to ...session.State) {
	db.hooks = append(db.hooks, transitionHook{run: h, to: slices.Clone(to)})
}

// transitionHook is a hook and the statuses it runs on (empty: all).
type transitionHook struct {
	run TransitionHook
	to  []session.State
}

func (h transitionHook) wants(to session.State) bool {
	return len(h.to) == 0 || slices.Contains(h.to, to)
}

// hooksFor reports whether a hook runs on a change from → to.
func (db *DB) hooksFor(from, to session.State) bool {
	if from == to {
		return false
	}
	for _, h := range db.hooks {
		if h.wants(to) {
			return true
		}
	}
	return false
}

// InsightsHook runs inside the transaction that stores the outcome of an
// interview's analysis (ready, failed or not_applicable), after the row and
// its timeline event are written: whatever it writes commits with them.
type InsightsHook func(ctx context.Context, tx pgx.Tx, iv session.Interview, status session.InsightsStatus) error

// OnInsights adds a hook run when an analysis outcome is stored. Hooks are
// added while the controller is assembled, before it serves.
func (db *DB) OnInsights(h InsightsHook) {
	db.insightsHooks = append(db.insightsHooks, h)
}

func (db *DB) runInsightsHooks(ctx context.Context, tx pgx.Tx, id string, status session.InsightsStatus) error {
	if len(db.insightsHooks) == 0 {
		return nil
	}
	iv, err := scanInterview(tx.QueryRow(ctx, `SELECT `+interviewColumns+` FROM interviews.interview_sessions WHERE id = $1`, id))
	if err != nil {
		return fmt.Errorf("read interview %s for its insights hooks: %w", id, err)
	}
	for _, h := range db.insightsHooks {
		if err := h(ctx, tx, iv, status); err != nil {
			return fmt.Errorf("on insights %s of interview %s: %w", status, id, err)
		}
	}
	return nil
}

func (db *DB) runHooks(ctx context.Context, tx pgx.Tx, iv session.Interview, from session.State) error {
	if iv.Status == from {
		return nil
	}
	for _, h := range db.hooks {
		if !h.wants(iv.Status) {
			continue
		}
		if err := h.run(ctx, tx, iv, from); err != nil {
			return fmt.Errorf("on %s → %s of interview %s: %w", from, iv.Status, iv.ID, err)
		}
	}
	return nil
}

// openTx is a pgx.Tx over a connection on which the caller opened the
// transaction itself (the pipelined ingest path sends BEGIN in a batch).
// Hooks may run statements in it; ending it stays the caller's job.
type openTx struct{ conn *pgx.Conn }

var errOpenTx = errors.New("postgres: a transition hook cannot end or nest the transaction it runs in")

func (t openTx) Begin(context.Context) (pgx.Tx, error) { return nil, errOpenTx }
func (t openTx) Commit(context.Context) error          { return errOpenTx }
func (t openTx) Rollback(context.Context) error        { return errOpenTx }
func (t openTx) CopyFrom(ctx context.Context, name pgx.Identifier, cols []string, src pgx.CopyFromSource) (int64, error) {
	return t.conn.CopyFrom(ctx, name, cols, src)
}
func (t openTx) SendBatch(ctx context.Context, b *pgx.Batch) pgx.BatchResults {
	return t.conn.SendBatch(ctx, b)
}

// LargeObjects is not offered to hooks (pgx builds it only from its own
// transactions); the zero value it returns must not be used.
func (t openTx) LargeObjects() pgx.LargeObjects { return pgx.LargeObjects{} }
func (t openTx) Prepare(ctx context.Context, name, sql string) (*pgconn.StatementDescription, error) {
	return t.conn.Prepare(ctx, name, sql)
}
func (t openTx) Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error) {
	return t.conn.Exec(ctx, sql, args...)
}
func (t openTx) Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error) {
	return t.conn.Query(ctx, sql, args...)
}
func (t openTx) QueryRow(ctx context.Context, sql string, args ...any) pgx.Row {
	return t.conn.QueryRow(ctx, sql, args...)
}
func (t openTx) Conn() *pgx.Conn { return t.conn }
