package postgres

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/interviewvm/controlplane/pkg/session"
)

const interviewColumns = `id, tenant_id, candidate_id, position_id, company_id, status, end_reason,
	architecture, max_duration_s, token_hash, machine_provider, machine_id, machine_name, machine_region,
	machine_state, machine_addr, last_seq_reported, transcript_acked_seq, state_changed_at, vm_last_seq, vm_buffered_segments, vm_retries, created_at, started_at, ready_at, ended_at, last_heartbeat_at, external_id, metadata,
	scheduled_at, region, prewarm_claimed_at, prewarmed_at, prewarm_region`

func scanInterview(row pgx.Row) (session.Interview, error) {
	var iv session.Interview
	var provider, mid, mname, mregion, mstate, maddr, prewarmRegion *string
	err := row.Scan(&iv.ID, &iv.TenantID, &iv.CandidateID, &iv.PositionID, &iv.CompanyID, &iv.Status, &iv.EndReason,
		&iv.Architecture, &iv.MaxDurationS, &iv.TokenHash, &provider, &mid, &mname, &mregion,
		&mstate, &maddr, &iv.LastSeqReported, &iv.AckedSeq, &iv.StateChangedAt, &iv.VM.LastSeq, &iv.VM.BufferedSegments, &iv.VM.Retries, &iv.CreatedAt, &iv.StartedAt, &iv.ReadyAt, &iv.EndedAt, &iv.LastHeartbeatAt, &iv.ExternalID, &iv.Metadata,
		&iv.ScheduledAt, &iv.Region, &iv.PrewarmClaimedAt, &iv.PrewarmedAt, &prewarmRegion)
	if err != nil {
		return iv, err
	}
	if prewarmRegion != nil {
		iv.PrewarmRegion = *prewarmRegion
	}
	if mname != nil {
		deref := func(s *string) string {
			if s == nil {
				return ""
			}
			return *s
		}
		iv.Machine = &session.Machine{
			ID: deref(mid), Name: *mname, Region: deref(mregion), State: deref(mstate),
			Provider: deref(provider), Addr: deref(maddr), SessionID: iv.ID,
		}
	}
	return iv, nil
}

// CreateInterview stores a scheduled interview. The candidate, position and
// company must belong to the scope's tenant; otherwise it is not found.
func (db *DB) CreateInterview(ctx context.Context, scope session.Scope, iv session.Interview) (session.Interview, error) {
	iv.ID = uuid.NewString()
	iv.TenantID = scope.TenantID
	iv.Status = session.StateScheduled
	var out session.Interview
	err := db.inScope(ctx, scope, func(tx pgx.Tx) error {
		var err error
		out, err = scanInterview(tx.QueryRow(ctx, `INSERT INTO interviews.interview_sessions
			(id, tenant_id, candidate_id, position_id, company_id, status, architecture, max_duration_s, external_id, metadata,
			scheduled_at, region)
			VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12) RETURNING `+interviewColumns,
			iv.ID, iv.TenantID, iv.CandidateID, iv.PositionID, iv.CompanyID, iv.Status, iv.Architecture, iv.MaxDurationS,
			iv.ExternalID, metadataOf(iv.Metadata), iv.ScheduledAt, iv.Region))
		return err
	})
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) && pgErr.Code == "23503" { // foreign_key_violation
		return out, session.Errorf(session.ENOTFOUND, "candidate, position or company not found")
	}
	if err != nil {
		return out, fmt.Errorf("create interview: %w", mapError(err))
	}
	return out, nil
}

// Interview returns one interview. It is read by every waiting start and
// every VM call, so the whole read-only transaction (begin, scope, query,
// commit) goes to the server in one round trip, as a pipeline.
func (db *DB) Interview(ctx context.Context, scope session.Scope, id string) (session.Interview, error) {
	iv, err := db.interview(ctx, scope, id)
	if err != nil {
		return iv, fmt.Errorf("get interview %s: %w", id, mapError(err))
	}
	return iv, nil
}

func (db *DB) interview(ctx context.Context, scope session.Scope, id string) (session.Interview, error) {
	var iv session.Interview
	b := &pgx.Batch{}
	b.Queue("BEGIN READ ONLY")
	if err := db.queueScope(ctx, b, scope); err != nil {
		return iv, err
	}
	b.Queue(`SELECT `+interviewColumns+` FROM interviews.interview_sessions WHERE id = $1`, id)
	b.Queue("COMMIT")
	br := db.Pool.SendBatch(ctx, b)
	// A connection left in a transaction is discarded by the pool.
	defer func() { _ = br.Close() }()
	for range 2 { // BEGIN, scope
		if _, err := br.Exec(); err != nil {
			return iv, err
		}
	}
	iv, err := scanInterview(br.QueryRow())
	if err != nil {
		return iv, err
	}
	if _, err := br.Exec(); err != nil { // COMMIT
		return iv, err
	}
	return iv, br.Close()
}

// UpdateInterview locks the interview, lets fn change it, and writes the
// changed row and the events fn returns in the same transaction. When fn
// returns an error nothing is written and the error is returned as is.
func (db *DB) UpdateInterview(ctx context.Context, scope session.Scope, id string,
	fn func(iv *session.Interview) ([]session.Event, error)) (session.Interview, error) {
	iv, _, fnErr, err := db.updatePipelined(ctx, scope, id, pipelineOpts{}, func(iv *session.Interview, _ int) ([]session.Event, error) {
		return fn(iv)
	})
	if fnErr != nil {
		return iv, fnErr
	}
	if err != nil {
		return iv, fmt.Errorf("update interview %s: %w", id, mapError(err))
	}
	return iv, nil
}

// StartInterview is UpdateInterview for a start. With countLive it is
// serialised per tenant: the tenant's row is locked first, and fn learns
// how many other interviews of the tenant are live (otherwise otherLive is
// 0 and only the interview is locked). It also returns the interview's
// position (nil when not found), read in the same round trip as the
// interview, for its VM's configuration. sent, when not nil, is called
// with the changed interview and its position as soon as the change and
// its COMMIT are sent, before PostgreSQL's answer is read (not at all when
// nothing is written): the caller may begin work that does not need the
// change committed yet, and learns whether it was from the error returned.
func (db *DB) StartInterview(ctx context.Context, scope session.Scope, id string, countLive bool,
	fn func(iv *session.Interview, otherLive int) ([]session.Event, error),
	sent func(iv session.Interview, pos *session.PositionRecord)) (session.Interview, *session.PositionRecord, error) {
	iv, pos, fnErr, err := db.updatePipelined(ctx, scope, id, pipelineOpts{lockTenant: countLive, position: true, sent: sent}, fn)
	if fnErr != nil {
		return iv, nil, fnErr
	}
	if err != nil {
		return iv, nil, fmt.Errorf("start interview %s: %w", id, mapError(err))
	}
	return iv, pos, nil
}

// notifyChannel is the PostgreSQL NOTIFY channel announcing that an
// interview changed (state or transcript); the payload is its id.
const notifyChannel = "interview_changed"

// queueWriteInterview queues the update of the interview's row and the
// insertion of its new events.
func queueWriteInterview(b *pgx.Batch, iv *session.Interview, events []session.Event) {
	var m session.Machine
	hasMachine := iv.Machine != nil
	if hasMachine {
		m = *iv.Machine
	}
	nullable := func(s string) *string {
		if !hasMachine {
			return nil
		}
		return &s
	}
	b.Queue(`UPDATE interviews.interview_sessions SET
		status = $2, end_reason = $3, token_hash = $4, machine_provider = $5, machine_id = $6,
		machine_name = $7, machine_region = $8, machine_state = $9, machine_addr = $10,
		last_seq_reported = $11, started_at = $12, ready_at = $13, ended_at = $14,
		last_heartbeat_at = $15, transcript_acked_seq = $16, state_changed_at = $17,
		vm_last_seq = $18, vm_buffered_segments = $19, vm_retries = $20,
		prewarm_claimed_at = $21, prewarmed_at = $22, prewarm_region = nullif($23, ''), updated_at = now()
		WHERE id = $1`,
		iv.ID, iv.Status, iv.EndReason, iv.TokenHash, nullable(m.Provider), nullable(m.ID),
		nullable(m.Name), nullable(m.Region), nullable(m.State), nullable(m.Addr),
		iv.LastSeqReported, iv.StartedAt, iv.ReadyAt, iv.EndedAt, iv.LastHeartbeatAt, iv.AckedSeq, iv.StateChangedAt,
		iv.VM.LastSeq, iv.VM.BufferedSegments, iv.VM.Retries, iv.PrewarmClaimedAt, iv.PrewarmedAt, iv.PrewarmRegion)
	for _, ev := range events {
		b.Queue(`INSERT INTO interviews.session_events
			(session_id, tenant_id, at, from_status, to_status, reason, actor) VALUES ($1, $2, $3, $4, $5, $6, $7)`,
			iv.ID, iv.TenantID, ev.At, ev.From, ev.To, ev.Reason, ev.Actor)
	}
}

// Events returns the interview's lifecycle timeline, oldest first.
func (db *DB) Events(ctx context.Context, scope session.Scope, id string) ([]session.Event, error) {
	var events []session.Event
	err := db.inScope(ctx, scope, func(tx pgx.Tx) error {
		var exists bool
		if err := tx.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM interviews.interview_sessions WHERE id = $1)`, id).Scan(&exists); err != nil {
			return err
		}
		if !exists {
			return pgx.ErrNoRows
		}
		rows, err := tx.Query(ctx, `SELECT at, from_status, to_status, reason, actor
			FROM interviews.session_events WHERE session_id = $1 ORDER BY id`, id)
		if err != nil {
			return err
		}
		events, err = pgx.CollectRows(rows, func(r pgx.CollectableRow) (session.Event, error) {
			var ev session.Event
			err := r.Scan(&ev.At, &ev.From, &ev.To, &ev.Reason, &ev.Actor)
			return ev, err
		})
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("list events of interview %s: %w", id, mapError(err))
	}
	if events == nil {
		events = []session.Event{}
	}
	return events, nil
}

// LiveInterviews returns every interview, of any tenant, whose VM may
// exist: the live ones, and the scheduled ones with a pre-warmed machine
// or a pre-warm create in flight, in no particular order (sorting 10,000
// wide rows is a tenth of a second of the reconciler's pass). It runs in
// the system scope.
func (db *DB) LiveInterviews(ctx context.Context) ([]session.Interview, error) {
	var out []session.Interview
	err := db.inScope(ctx, session.SystemScope(), func(tx pgx.Tx) error {
		rows, err := tx.Query(ctx, `SELECT `+interviewColumns+` FROM interviews.interview_sessions
			WHERE status IN ('provisioning','ready','in_progress','ending')
				OR (status = 'scheduled' AND (prewarm_claimed_at IS NOT NULL
					OR (machine_id IS NOT NULL AND machine_state IS DISTINCT FROM 'destroyed')))`)
		if err != nil {
			return err
		}
		out, err = pgx.CollectRows(rows, func(r pgx.CollectableRow) (session.Interview, error) { return scanInterview(r) })
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("list live interviews: %w", mapError(err))
	}
	return out, nil
}

// PrewarmInterviews returns, across tenants, the interviews the pre-warmer
// looks after: scheduled ones due by horizon, with a pre-warmed machine or
// with a pre-warm claim, and provisioning ones whose pre-warm create is
// still claimed. It runs in the system scope.
func (db *DB) PrewarmInterviews(ctx context.Context, horizon time.Time) ([]session.Interview, error) {
	var out []session.Interview
	err := db.inScope(ctx, session.SystemScope(), func(tx pgx.Tx) error {
		rows, err := tx.Query(ctx, `SELECT `+interviewColumns+` FROM interviews.interview_sessions
			WHERE (status = 'scheduled' AND (
				(scheduled_at IS NOT NULL AND scheduled_at <= $1)
				OR prewarm_claimed_at IS NOT NULL
				OR (machine_id IS NOT NULL AND machine_state IS DISTINCT FROM 'destroyed')))
			OR (status = 'provisioning' AND prewarm_claimed_at IS NOT NULL)
			ORDER BY scheduled_at NULLS FIRST, id`, horizon)
		if err != nil {
			return err
		}
		out, err = pgx.CollectRows(rows, func(r pgx.CollectableRow) (session.Interview, error) { return scanInterview(r) })
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("list interviews to pre-warm: %w", mapError(err))
	}
	return out, nil
}
