package postgres

import (
	"context"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5"

	"github.com/interviewvm/controlplane/pkg/session"
)

// This file stores interview analyses (insights): one row per interview,
// reset to pending whenever an analysis is queued, so replicas, retries
// and re-runs never make a second one.

// PendingInsightsTx marks the analysis of an interview pending (creating
// its row, or resetting a finished one for a re-run) in tx, the
// transaction that enqueues its job.
func PendingInsightsTx(ctx context.Context, tx pgx.Tx, tenantID, interviewID string) error {
	_, err := tx.Exec(ctx, `INSERT INTO interviews.insights (interview_id, tenant_id, status)
		VALUES ($1, $2, 'pending')
		ON CONFLICT (interview_id) DO UPDATE SET status = 'pending', model = '', simulated = false,
			overall_score = NULL, recommendation = NULL, summary = '', competencies = '[]',
			strengths = '[]', concerns = '[]', input_tokens = 0, output_tokens = 0,
			dropped_evidence = 0, omitted_segments = 0, error = '', attempts = 0,
			created_at = now(), completed_at = NULL`, interviewID, tenantID)
	if err != nil {
		return fmt.Errorf("mark insights of interview %s pending: %w", interviewID, err)
	}
	return nil
}

// RerunInsights marks the analysis of a completed interview pending and
// runs enqueue in the same transaction (tenantID: the interview's). The interview must exist in scope
// (session.ENOTFOUND) and be completed (session.ECONFLICT).
func (db *DB) RerunInsights(ctx context.Context, scope session.Scope, id string, enqueue func(ctx context.Context, tx pgx.Tx, tenantID string) error) error {
	err := db.inScope(ctx, scope, func(tx pgx.Tx) error {
		var tenantID string
		var status session.State
		if err := tx.QueryRow(ctx, `SELECT tenant_id, status FROM interviews.interview_sessions
			WHERE id = $1 FOR UPDATE`, id).Scan(&tenantID, &status); err != nil {
			return err
		}
		if status != session.StateCompleted {
			return session.Errorf(session.ECONFLICT, "the interview is %s; only completed interviews are analyzed", status)
		}
		if err := PendingInsightsTx(ctx, tx, tenantID, id); err != nil {
			return err
		}
		return enqueue(ctx, tx, tenantID)
	})
	if err != nil {
		return fmt.Errorf("re-run insights of interview %s: %w", id, mapError(err))
	}
	return nil
}

const insightsColumns = `interview_id, tenant_id, status, model, simulated, overall_score, recommendation,
	summary, competencies, strengths, concerns, input_tokens, output_tokens, dropped_evidence,
	omitted_segments, error, attempts, created_at, completed_at`

// Insights returns the analysis of an interview: session.ENOTFOUND when
// the interview is not in scope or has none (it has not completed, or
// analysis is off).
func (db *DB) Insights(ctx context.Context, scope session.Scope, id string) (session.Insights, error) {
	var in session.Insights
	err := db.inScope(ctx, scope, func(tx pgx.Tx) error {
		var errText string
		err := tx.QueryRow(ctx, `SELECT `+insightsColumns+` FROM interviews.insights WHERE interview_id = $1`, id).Scan(
			&in.InterviewID, &in.TenantID, &in.Status, &in.Model, &in.Simulated, &in.OverallScore, &in.Recommendation,
			&in.Summary, &in.Competencies, &in.Strengths, &in.Concerns, &in.Usage.InputTokens, &in.Usage.OutputTokens,
			&in.DroppedEvidence, &in.OmittedSegments, &errText, &in.Attempts, &in.CreatedAt, &in.CompletedAt)
		if errText != "" {
			in.Error = &errText
		}
		return err
	})
	if err != nil {
		return session.Insights{}, fmt.Errorf("read insights of interview %s: %w", id, mapError(err))
	}
	return in, nil
}

// StartInsights marks a pending (or interrupted running) analysis running
// and counts the attempt. ok is false when there is nothing to run: the
// interview was erased, or its analysis already finished.
func (db *DB) StartInsights(ctx context.Context, tenantID, id string) (attempts int, ok bool, err error) {
	err = db.inScope(ctx, session.TenantScope(tenantID), func(tx pgx.Tx) error {
		return tx.QueryRow(ctx, `UPDATE interviews.insights SET status = 'running', attempts = attempts + 1
			WHERE interview_id = $1 AND status IN ('pending','running') RETURNING attempts`, id).Scan(&attempts)
	})
	if err == nil {
		return attempts, true, nil
	}
	if errors.Is(err, pgx.ErrNoRows) {
		return 0, false, nil
	}
	return 0, false, fmt.Errorf("start insights of interview %s: %w", id, mapError(err))
}

// PendInsights puts a running analysis back to pending (its job waits
// before the next attempt).
func (db *DB) PendInsights(ctx context.Context, tenantID, id string) error {
	err := db.inScope(ctx, session.TenantScope(tenantID), func(tx pgx.Tx) error {
		_, err := tx.Exec(ctx, `UPDATE interviews.insights SET status = 'pending'
			WHERE interview_id = $1 AND status = 'running'`, id)
		return err
	})
	if err != nil {
		return fmt.Errorf("pend insights of interview %s: %w", id, mapError(err))
	}
	return nil
}

// FinishInsights stores the outcome of a running analysis (status ready,
// failed or not_applicable) and records it on the interview's timeline:
// an event whose from and to are the interview's unchanged status, with
// reason insights_ready or insights_failed and actor insights. ok is
// false when the analysis was no longer running (erased, or reset by a
// re-run that a newer job will finish).
func (db *DB) FinishInsights(ctx context.Context, in session.Insights) (ok bool, err error) {
	err = db.inScope(ctx, session.TenantScope(in.TenantID), func(tx pgx.Tx) error {
		errText := ""
		if in.Error != nil {
			errText = *in.Error
		}
		tag, err := tx.Exec(ctx, `UPDATE interviews.insights SET status = $2, model = $3, simulated = $4,
			overall_score = $5, recommendation = $6, summary = $7, competencies = $8, strengths = $9,
			concerns = $10, input_tokens = $11, output_tokens = $12, dropped_evidence = $13,
			omitted_segments = $14, error = $15, completed_at = now()
			WHERE interview_id = $1 AND status = 'running'`,
			in.InterviewID, in.Status, in.Model, in.Simulated, in.OverallScore, in.Recommendation, in.Summary,
			jsonOr(in.Competencies), jsonOr(in.Strengths), jsonOr(in.Concerns), in.Usage.InputTokens,
			in.Usage.OutputTokens, in.DroppedEvidence, in.OmittedSegments, errText)
		if err != nil {
			return err
		}
		if tag.RowsAffected() == 0 {
			return nil
		}
		ok = true
		reason := session.EventInsightsReady
		if in.Status != session.InsightsReady {
			reason = session.EventInsightsFailed
		}
		if _, err = tx.Exec(ctx, `INSERT INTO interviews.session_events (session_id, tenant_id, from_status, to_status, reason, actor)
			SELECT id, tenant_id, status, status, $2, $3 FROM interviews.interview_sessions WHERE id = $1`,
			in.InterviewID, reason, session.ActorInsights); err != nil {
			return err
		}
		return db.runInsightsHooks(ctx, tx, in.InterviewID, in.Status)
	})
	if err != nil {
		return false, fmt.Errorf("store insights of interview %s: %w", in.InterviewID, mapError(err))
	}
	return ok, nil
}

func jsonOr(b []byte) string {
	if len(b) == 0 {
		return "[]"
	}
	return string(b)
}
