package postgres

import (
	"context"
	"fmt"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/interviewvm/controlplane/pkg/session"
)

// The queries of this file cross tenants: they run in the system scope and
// serve the operator CLI only, never a tenant's request.

// InterviewFilter selects interviews of every tenant. Zero fields select
// everything.
type InterviewFilter struct {
	// Status keeps only interviews in this state.
	Status session.State
	// TenantID keeps only this tenant's interviews (a UUID).
	TenantID string
}

// ListAllInterviews returns a page of the interviews of every tenant that
// match f, newest first, and the cursor of the next page ("" after the
// last).
func (db *DB) ListAllInterviews(ctx context.Context, f InterviewFilter, p session.Page) ([]session.Interview, string, error) {
	if f.Status != "" && !f.Status.Valid() {
		return nil, "", session.Errorf(session.EINVALID, "unknown status %q", f.Status)
	}
	if f.TenantID != "" {
		if _, err := uuid.Parse(f.TenantID); err != nil {
			return nil, "", session.Errorf(session.EINVALID, "tenant must be a UUID, not %q", f.TenantID)
		}
	}
	if p.Limit <= 0 {
		p.Limit = 50
	}
	var items []session.Interview
	var next string
	err := db.inScope(ctx, session.SystemScope(), func(tx pgx.Tx) error {
		q := `SELECT ` + prefixed("t.", interviewColumns) + ` FROM interviews.interview_sessions t`
		var args []any
		var where []string
		if f.Status != "" {
			args = append(args, f.Status)
			where = append(where, fmt.Sprintf("t.status = $%d", len(args)))
		}
		if f.TenantID != "" {
			args = append(args, f.TenantID)
			where = append(where, fmt.Sprintf("t.tenant_id = $%d", len(args)))
		}
		for i, w := range where {
			if i == 0 {
				q += " WHERE " + w
			} else {
				q += " AND " + w
			}
		}
		var err error
		items, next, err = pageQuery(ctx, tx, q, len(where) > 0, args, p,
			func(r pgx.CollectableRow) (session.Interview, error) { return scanInterview(r) },
			func(x session.Interview) (time.Time, string) { return x.CreatedAt, x.ID })
		return err
	})
	if err != nil {
		return nil, "", fmt.Errorf("list interviews of every tenant: %w", mapError(err))
	}
	return items, next, nil
}

// InterviewsByID returns the interviews, of any tenant, whose ids are
// among ids, keyed by id. Ids that are not UUIDs or name no interview are
// absent from the answer.
func (db *DB) InterviewsByID(ctx context.Context, ids []string) (map[string]session.Interview, error) {
	var valid []string
	for _, id := range ids {
		if u, err := uuid.Parse(id); err == nil && len(id) == 36 {
			valid = append(valid, u.String())
		}
	}
	out := make(map[string]session.Interview, len(valid))
	if len(valid) == 0 {
		return out, nil
	}
	err := db.inScope(ctx, session.SystemScope(), func(tx pgx.Tx) error {
		rows, err := tx.Query(ctx, `SELECT `+interviewColumns+` FROM interviews.interview_sessions
			WHERE id = ANY($1::uuid[])`, valid)
		if err != nil {
			return err
		}
		list, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (session.Interview, error) { return scanInterview(r) })
		for _, iv := range list {
			out[iv.ID] = iv
		}
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("get interviews by id: %w", mapError(err))
	}
	return out, nil
}
