package postgres

import (
	"context"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/interviewvm/controlplane/pkg/session"
)

// This file holds what a customer's product changes after creating:
// partial updates and erasure of positions, candidates and interviews.

const candidateColumns = `id, tenant_id, full_name, email, external_id, metadata, created_at`

func scanCandidate(row pgx.Row) (session.Candidate, error) {
	var c session.Candidate
	err := row.Scan(&c.ID, &c.TenantID, &c.FullName, &c.Email, &c.ExternalID, &c.Metadata, &c.CreatedAt)
	return c, err
}

func candidateTx(ctx context.Context, tx pgx.Tx, id string, lock bool) (session.Candidate, error) {
	q := `SELECT ` + candidateColumns + ` FROM interviews.candidates WHERE id = $1`
	if lock {
		q += ` FOR UPDATE`
	}
	return scanCandidate(tx.QueryRow(ctx, q, id))
}

// metadataOf returns m, or an empty map for nil, so the column always
// holds an object.
func metadataOf(m map[string]string) map[string]string {
	if m == nil {
		return map[string]string{}
	}
	return m
}

// PatchPosition changes a position's title, description or competencies.
func (db *DB) PatchPosition(ctx context.Context, scope session.Scope, id string, patch session.PositionPatch) (session.PositionRecord, error) {
	var p session.PositionRecord
	err := db.inScope(ctx, scope, func(tx pgx.Tx) error {
		tag, err := tx.Exec(ctx, `UPDATE interviews.positions SET title = coalesce($2, title),
			description = coalesce($3, description) WHERE id = $1`, id, patch.Title, patch.Description)
		if err != nil {
			return err
		}
		if tag.RowsAffected() == 0 {
			return pgx.ErrNoRows
		}
		if patch.Competencies != nil {
			if _, err := tx.Exec(ctx, `DELETE FROM interviews.position_competencies WHERE position_id = $1`, id); err != nil {
				return err
			}
			for i, c := range patch.Competencies {
				_, err := tx.Exec(ctx, `INSERT INTO interviews.position_competencies
					(position_id, tenant_id, ordinal, name, weight, description) VALUES ($1, $2, $3, $4, $5, $6)`,
					id, scope.TenantID, i, c.Name, c.Weight, c.Description)
				if err != nil {
					return err
				}
			}
		}
		p, err = positionTx(ctx, tx, id)
		return err
	})
	if err != nil {
		return session.PositionRecord{}, fmt.Errorf("update position %s: %w", id, mapError(err))
	}
	return p, nil
}

// DeletePosition deletes a position no interview references; one that is
// referenced is a conflict.
func (db *DB) DeletePosition(ctx context.Context, scope session.Scope, id string) error {
	err := db.inScope(ctx, scope, func(tx pgx.Tx) error {
		tag, err := tx.Exec(ctx, `DELETE FROM interviews.positions WHERE id = $1`, id)
		if err != nil {
			return err
		}
		if tag.RowsAffected() == 0 {
			return pgx.ErrNoRows
		}
		return nil
	})
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) && pgErr.Code == "23503" { // foreign_key_violation
		return session.Errorf(session.ECONFLICT, "position has interviews: delete them first")
	}
	if err != nil {
		return fmt.Errorf("delete position %s: %w", id, mapError(err))
	}
	return nil
}

// PatchCandidate changes a candidate.
func (db *DB) PatchCandidate(ctx context.Context, scope session.Scope, id string, patch session.CandidatePatch) (session.Candidate, error) {
	var c session.Candidate
	err := db.inScope(ctx, scope, func(tx pgx.Tx) error {
		var err error
		c, err = scanCandidate(tx.QueryRow(ctx, `UPDATE interviews.candidates SET
			full_name = coalesce($2, full_name), email = coalesce($3, email),
			external_id = CASE WHEN $4 THEN $5 ELSE external_id END,
			metadata = coalesce($6, metadata)
			WHERE id = $1 RETURNING `+candidateColumns,
			id, patch.FullName, patch.Email, patch.ExternalID.Set, patch.ExternalID.Value, nilIfEmpty(patch.Metadata)))
		return err
	})
	if err != nil {
		return session.Candidate{}, fmt.Errorf("update candidate %s: %w", id, mapError(err))
	}
	return c, nil
}

// nilIfEmpty returns nil for a nil map (the column stays), else the map
// itself (an empty one clears the column).
func nilIfEmpty(m map[string]string) any {
	if m == nil {
		return nil
	}
	return m
}

// PatchInterview changes an interview while it is scheduled; in any other
// state it is a conflict.
func (db *DB) PatchInterview(ctx context.Context, scope session.Scope, id string, patch session.InterviewPatch) (session.Interview, error) {
	var iv session.Interview
	err := db.inScope(ctx, scope, func(tx pgx.Tx) error {
		var status session.State
		if err := tx.QueryRow(ctx, `SELECT status FROM interviews.interview_sessions WHERE id = $1 FOR UPDATE`, id).Scan(&status); err != nil {
			return err
		}
		if status != session.StateScheduled {
			return session.Errorf(session.ECONFLICT, "interview is %s: only a scheduled interview can change", status)
		}
		var err error
		iv, err = scanInterview(tx.QueryRow(ctx, `UPDATE interviews.interview_sessions SET
			max_duration_s = coalesce($2, max_duration_s),
			external_id = CASE WHEN $3 THEN $4 ELSE external_id END,
			metadata = coalesce($5, metadata),
			scheduled_at = coalesce($6, scheduled_at), region = coalesce($7, region), updated_at = now()
			WHERE id = $1 RETURNING `+interviewColumns,
			id, patch.MaxDurationS, patch.ExternalID.Set, patch.ExternalID.Value, nilIfEmpty(patch.Metadata),
			patch.ScheduledAt, patch.Region))
		return err
	})
	if err != nil {
		return session.Interview{}, fmt.Errorf("update interview %s: %w", id, mapError(err))
	}
	return iv, nil
}

// CandidateInterviews returns every interview of a candidate.
func (db *DB) CandidateInterviews(ctx context.Context, scope session.Scope, candidateID string) ([]session.Interview, error) {
	var out []session.Interview
	err := db.inScope(ctx, scope, func(tx pgx.Tx) error {
		rows, err := tx.Query(ctx, `SELECT `+interviewColumns+` FROM interviews.interview_sessions
			WHERE candidate_id = $1 ORDER BY created_at`, candidateID)
		if err != nil {
			return err
		}
		out, err = pgx.CollectRows(rows, func(r pgx.CollectableRow) (session.Interview, error) { return scanInterview(r) })
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("list interviews of candidate %s: %w", candidateID, mapError(err))
	}
	return out, nil
}

// errStillLive refuses to erase an interview whose VM may still run: the
// caller cancels it first.
var errStillLive = session.Errorf(session.ECONFLICT, "interview is live: cancel it first")

// DeleteInterview erases an interview with its transcript and timeline, in
// one transaction. A live interview is refused (cancel it first).
func (db *DB) DeleteInterview(ctx context.Context, scope session.Scope, id string) error {
	err := db.inScope(ctx, scope, func(tx pgx.Tx) error {
		var status session.State
		if err := tx.QueryRow(ctx, `SELECT status FROM interviews.interview_sessions WHERE id = $1 FOR UPDATE`, id).Scan(&status); err != nil {
			return err
		}
		if status.Live() {
			return errStillLive
		}
		return eraseInterviewsTx(ctx, tx, `id = $1`, id)
	})
	if err != nil {
		return fmt.Errorf("delete interview %s: %w", id, mapError(err))
	}
	return nil
}

// DeleteCandidate erases a candidate and every interview of theirs with
// its transcript and timeline, in one transaction (right to erasure). A
// live interview of theirs is refused (cancel it first).
func (db *DB) DeleteCandidate(ctx context.Context, scope session.Scope, id string) error {
	err := db.inScope(ctx, scope, func(tx pgx.Tx) error {
		if _, err := candidateTx(ctx, tx, id, true); err != nil {
			return err
		}
		var live int
		if err := tx.QueryRow(ctx, `SELECT count(*) FROM (SELECT 1 FROM interviews.interview_sessions
			WHERE candidate_id = $1 AND status IN ('provisioning', 'ready', 'in_progress', 'ending') FOR UPDATE) l`, id).Scan(&live); err != nil {
			return err
		}
		if live > 0 {
			return errStillLive
		}
		if err := eraseInterviewsTx(ctx, tx, `candidate_id = $1`, id); err != nil {
			return err
		}
		if _, err := tx.Exec(ctx, `DELETE FROM interviews.idempotency_keys WHERE subject_ids && ARRAY[$1::uuid]`, id); err != nil {
			return err
		}
		_, err := tx.Exec(ctx, `DELETE FROM interviews.candidates WHERE id = $1`, id)
		return err
	})
	if err != nil {
		return fmt.Errorf("delete candidate %s: %w", id, mapError(err))
	}
	return nil
}

// eraseInterviewsTx deletes the interviews matching where ($1 is arg) and
// everything that belongs to them. The foreign keys cascade too; the
// explicit deletes keep the erasure visible here when a table is added.
func eraseInterviewsTx(ctx context.Context, tx pgx.Tx, where string, arg string) error {
	sel := `SELECT id FROM interviews.interview_sessions WHERE ` + where
	for _, q := range []string{
		`DELETE FROM interviews.idempotency_keys WHERE subject_ids && ARRAY(` + sel + `)`,
		`DELETE FROM interviews.transcript_segments WHERE session_id IN (` + sel + `)`,
		`DELETE FROM interviews.session_events WHERE session_id IN (` + sel + `)`,
		`DELETE FROM interviews.interview_sessions WHERE ` + where,
	} {
		if _, err := tx.Exec(ctx, q, arg); err != nil {
			return fmt.Errorf("erase interviews: %w", err)
		}
	}
	return nil
}
