package postgres

import (
	"context"
	"errors"
	"reflect"

	"github.com/jackc/pgx/v5"

	"github.com/interviewvm/controlplane/pkg/session"
)

// updatePipelined is the transaction of UpdateInterview and StartInterview,
// in as few round trips as the work allows, because every round trip is
// waited for while the interview's row (and, with lockTenant, the tenant's)
// is locked and a pool connection held:
//
//  1. BEGIN, the scope, (with opts.lockTenant: the tenant's row locked and
//     its other live interviews counted,) the interview read FOR UPDATE,
//     (with hooks registered) the tenant's webhook endpoints, (and, with
//     opts.position, its position and competencies: a start hands them to
//     its VM with the machine);
//  2. the row and fn's events written, the change notified, and COMMIT;
//     transition hooks wanting the new status run before it, on the open
//     transaction (their own round trips, if they write: a change with no
//     webhook endpoint to deliver to writes nothing and costs none).
//
// fn sees the locked interview (and the count); pos is the position read,
// nil without opts.position or when it is not found; a change it does not make
// is not written (the transaction just ends). fnErr is fn's error; err any
// other, for the caller to wrap. Either way nothing is written.
// pipelineOpts selects the extra reads of updatePipelined's first round
// trip.
type pipelineOpts struct {
	lockTenant bool // lock the tenant's row and count its other live interviews
	position   bool // read the interview's position
	// sent, when set, is called with the changed interview (and the
	// position read) once its write and COMMIT are on the wire, before
	// their answer is read; not called when nothing is written.
	sent func(iv session.Interview, pos *session.PositionRecord)
}

// scanPosition reads the position and competencies queued by
// updatePipelined; nil when the position is not found.
func scanPosition(br pgx.BatchResults) (*session.PositionRecord, error) {
	var p session.PositionRecord
	err := br.QueryRow().Scan(&p.ID, &p.TenantID, &p.Title, &p.Description, &p.CreatedAt)
	found := err == nil
	if errors.Is(err, pgx.ErrNoRows) {
		err = nil
	}
	if err != nil {
		return nil, err
	}
	rows, err := br.Query()
	if err != nil {
		return nil, err
	}
	p.Competencies, err = pgx.CollectRows(rows, func(r pgx.CollectableRow) (session.Competency, error) {
		var c session.Competency
		err := r.Scan(&c.Name, &c.Weight, &c.Description)
		return c, err
	})
	if err != nil || !found {
		return nil, err
	}
	return &p, nil
}

func (db *DB) updatePipelined(ctx context.Context, scope session.Scope, id string, opts pipelineOpts,
	fn func(iv *session.Interview, otherLive int) ([]session.Event, error)) (iv session.Interview, pos *session.PositionRecord, fnErr, err error) {
	lockTenant := opts.lockTenant
	b := &pgx.Batch{}
	b.Queue("BEGIN")
	if err := db.queueScope(ctx, b, scope); err != nil {
		return iv, nil, nil, err
	}
	if lockTenant {
		b.Queue(`SELECT 1 FROM interviews.tenants WHERE id = $1 FOR UPDATE`, scope.TenantID)
		b.Queue(`SELECT count(*) FROM interviews.interview_sessions
			WHERE status IN ('provisioning','ready','in_progress','ending') AND id <> $1`, id)
	}
	b.Queue(`SELECT `+interviewColumns+` FROM interviews.interview_sessions WHERE id = $1 FOR UPDATE`, id)
	// Any status change may run the hooks; the webhook hook's endpoint
	// lookup is read here, in the first round trip, rather than in a round
	// trip of its own while the row is locked (see endpointsFromContext).
	prefetch := len(db.hooks) > 0
	if prefetch {
		queueEndpointPrefetch(b, id)
	}
	if opts.position {
		b.Queue(`SELECT p.id, p.tenant_id, p.title, p.description, p.created_at
			FROM interviews.positions p JOIN interviews.interview_sessions s ON s.position_id = p.id
			WHERE s.id = $1`, id)
		b.Queue(`SELECT c.name, c.weight, c.description
			FROM interviews.position_competencies c JOIN interviews.interview_sessions s ON s.position_id = c.position_id
			WHERE s.id = $1 ORDER BY c.ordinal`, id)
	}

	pc, err := db.Pool.Acquire(ctx)
	if err != nil {
		return iv, nil, nil, err
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
	var endpoints []prefetchedEndpoint
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
	if err == nil && prefetch {
		endpoints, err = scanEndpointPrefetch(br)
	}
	if err == nil && opts.position {
		pos, err = scanPosition(br)
	}
	if cerr := br.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return iv, nil, nil, err
	}

	before := iv
	if iv.Machine != nil { // fn may change the machine in place
		m := *iv.Machine
		before.Machine = &m
	}
	events, err := fn(&iv, live)
	if err != nil {
		return iv, nil, err, err
	}
	if len(events) == 0 && reflect.DeepEqual(iv, before) {
		// Nothing changed (a repeated start, a no-op): no write.
		if err := commit(ctx, conn); err != nil {
			return iv, nil, nil, err
		}
		committed = true
		return iv, pos, nil, nil
	}
	transition := iv.Status != before.Status
	if db.hooksFor(before.Status, iv.Status) {
		// The hooks' statements go first, on the open transaction, so the
		// write, its notification and COMMIT still share one round trip.
		hctx := ctx
		if prefetch {
			hctx = withPrefetchedEndpoints(ctx, iv.TenantID, endpoints)
		}
		if err := db.runHooks(hctx, openTx{conn}, iv, before.Status); err != nil {
			return iv, nil, nil, err
		}
	}
	w := &pgx.Batch{}
	queueWriteInterview(w, &iv, events)
	if transition {
		w.Queue(`SELECT pg_notify($1, $2)`, notifyChannel, iv.ID)
	}
	w.Queue("COMMIT")
	// A hook's failed statement left the transaction aborted: the write
	// fails, and the change with it.
	wr := conn.SendBatch(ctx, w)
	if opts.sent != nil {
		opts.sent(iv, pos)
	}
	if err := wr.Close(); err != nil {
		return iv, nil, nil, err
	}
	committed = true
	return iv, pos, nil, nil
}
