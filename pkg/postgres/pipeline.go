package postgres

import (
	"context"
	"reflect"

	"github.com/jackc/pgx/v5"

	"github.com/interviewvm/controlplane/pkg/session"
)

// updatePipelined is the transaction of UpdateInterview and StartInterview,
// in as few round trips as the work allows, because every round trip is
// waited for while the interview's row (and, with lockTenant, the tenant's)
// is locked and a pool connection held:
//
//  1. BEGIN, the scope, (with lockTenant: the tenant's row locked and its
//     other live interviews counted,) and the interview read FOR UPDATE;
//  2. the row and fn's events written, the change notified, and COMMIT,
//     unless transition hooks must run: they run on the open transaction,
//     then COMMIT is sent alone.
//
// fn sees the locked interview (and the count); a change it does not make
// is not written (the transaction just ends). fnErr is fn's error; err any
// other, for the caller to wrap. Either way nothing is written.
func (db *DB) updatePipelined(ctx context.Context, scope session.Scope, id string, lockTenant bool,
	fn func(iv *session.Interview, otherLive int) ([]session.Event, error)) (iv session.Interview, fnErr, err error) {
	b := &pgx.Batch{}
	b.Queue("BEGIN")
	if err := db.queueScope(ctx, b, scope); err != nil {
		return iv, nil, err
	}
	if lockTenant {
		b.Queue(`SELECT 1 FROM interviews.tenants WHERE id = $1 FOR UPDATE`, scope.TenantID)
		b.Queue(`SELECT count(*) FROM interviews.interview_sessions
			WHERE status IN ('provisioning','ready','in_progress','ending') AND id <> $1`, id)
	}
	b.Queue(`SELECT `+interviewColumns+` FROM interviews.interview_sessions WHERE id = $1 FOR UPDATE`, id)

	pc, err := db.Pool.Acquire(ctx)
	if err != nil {
		return iv, nil, err
	}
	defer pc.Release() // a connection left in a transaction is discarded
	conn := pc.Conn()
	committed := false
	defer func() {
		if !committed {
			_, _ = conn.Exec(context.WithoutCancel(ctx), "ROLLBACK")
		}
	}()

	var live int
	br := conn.SendBatch(ctx, b)
	for range 2 { // BEGIN, scope
		if _, err = br.Exec(); err != nil {
			break
		}
	}
	if err == nil && lockTenant {
		if _, err = br.Exec(); err == nil {
			err = br.QueryRow().Scan(&live)
		}
	}
	if err == nil {
		iv, err = scanInterview(br.QueryRow())
	}
	if cerr := br.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return iv, nil, err
	}

	before := iv
	if iv.Machine != nil { // fn may change the machine in place
		m := *iv.Machine
		before.Machine = &m
	}
	events, err := fn(&iv, live)
	if err != nil {
		return iv, err, err
	}
	if len(events) == 0 && reflect.DeepEqual(iv, before) {
		// Nothing changed (a repeated start, a no-op): no write.
		if err := commit(ctx, conn); err != nil {
			return iv, nil, err
		}
		committed = true
		return iv, nil, nil
	}
	transition := iv.Status != before.Status
	hooks := transition && len(db.hooks) > 0
	w := &pgx.Batch{}
	queueWriteInterview(w, &iv, events)
	if transition {
		w.Queue(`SELECT pg_notify($1, $2)`, notifyChannel, iv.ID)
	}
	if !hooks {
		w.Queue("COMMIT")
	}
	if err := conn.SendBatch(ctx, w).Close(); err != nil {
		return iv, nil, err
	}
	if hooks {
		if err := db.runHooks(ctx, openTx{conn}, iv, before.Status); err != nil {
			return iv, nil, err
		}
		if err := commit(ctx, conn); err != nil {
			return iv, nil, err
		}
	}
	committed = true
	return iv, nil, nil
}
