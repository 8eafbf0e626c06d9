package postgres

import (
	"context"
	"encoding/base64"
	"fmt"
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/interviewvm/controlplane/pkg/session"
)

// cursor is the position after which a page starts: the last row's
// creation time and id.
type cursor struct {
	at time.Time
	id string
}

func encodeCursor(at time.Time, id string) string {
	return base64.RawURLEncoding.EncodeToString([]byte(at.UTC().Format(time.RFC3339Nano) + "|" + id))
}

func decodeCursor(s string) (*cursor, error) {
	if s == "" {
		return nil, nil
	}
	bad := session.Errorf(session.EINVALID, "cursor is not one this API issued")
	raw, err := base64.RawURLEncoding.DecodeString(s)
	if err != nil {
		return nil, bad
	}
	at, id, ok := strings.Cut(string(raw), "|")
	if !ok {
		return nil, bad
	}
	t, err := time.Parse(time.RFC3339Nano, at)
	if err != nil {
		return nil, bad
	}
	if _, err := uuid.Parse(id); err != nil {
		return nil, bad
	}
	return &cursor{at: t, id: id}, nil
}

// pageQuery runs a keyset-paginated query. base must select from a table
// aliased t with created_at and id columns and may hold a WHERE clause
// (then hasWhere); args are its parameters.
func pageQuery[T any](ctx context.Context, tx pgx.Tx, base string, hasWhere bool, args []any, p session.Page,
	scan func(pgx.CollectableRow) (T, error), key func(T) (time.Time, string)) ([]T, string, error) {
	c, err := decodeCursor(p.Cursor)
	if err != nil {
		return nil, "", err
	}
	q := base
	if c != nil {
		join := " WHERE "
		if hasWhere {
			join = " AND "
		}
		q += fmt.Sprintf("%s(t.created_at, t.id) < ($%d, $%d)", join, len(args)+1, len(args)+2)
		args = append(args, c.at, c.id)
	}
	q += fmt.Sprintf(" ORDER BY t.created_at DESC, t.id DESC LIMIT $%d", len(args)+1)
	args = append(args, p.Limit+1)
	rows, err := tx.Query(ctx, q, args...)
	if err != nil {
		return nil, "", err
	}
	items, err := pgx.CollectRows(rows, scan)
	if err != nil {
		return nil, "", err
	}
	next := ""
	if len(items) > p.Limit {
		items = items[:p.Limit]
		at, id := key(items[len(items)-1])
		next = encodeCursor(at, id)
	}
	return items, next, nil
}

// ListPositions returns a page of the tenant's positions with their competencies.
func (db *DB) ListPositions(ctx context.Context, scope session.Scope, p session.Page) ([]session.PositionRecord, string, error) {
	var items []session.PositionRecord
	var next string
	err := db.inScope(ctx, scope, func(tx pgx.Tx) error {
		var err error
		items, next, err = pageQuery(ctx, tx, `SELECT t.id, t.tenant_id, t.title, t.description, t.created_at,
			coalesce((SELECT json_agg(json_build_object('name', c.name, 'weight', c.weight, 'description', c.description) ORDER BY c.ordinal)
				FROM interviews.position_competencies c WHERE c.position_id = t.id), '[]'::json)
			FROM interviews.positions t`, false, nil, p,
			func(r pgx.CollectableRow) (session.PositionRecord, error) {
				var x session.PositionRecord
				err := r.Scan(&x.ID, &x.TenantID, &x.Title, &x.Description, &x.CreatedAt, &x.Competencies)
				return x, err
			}, func(x session.PositionRecord) (time.Time, string) { return x.CreatedAt, x.ID })
		return err
	})
	if err != nil {
		return nil, "", fmt.Errorf("list positions: %w", mapError(err))
	}
	return items, next, nil
}

// ListCandidates returns a page of the tenant's candidates.
func (db *DB) ListCandidates(ctx context.Context, scope session.Scope, p session.Page) ([]session.Candidate, string, error) {
	var items []session.Candidate
	var next string
	err := db.inScope(ctx, scope, func(tx pgx.Tx) error {
		var err error
		items, next, err = pageQuery(ctx, tx, `SELECT `+prefixed("t.", candidateColumns)+`
			FROM interviews.candidates t`, false, nil, p,
			func(r pgx.CollectableRow) (session.Candidate, error) { return scanCandidate(r) }, func(x session.Candidate) (time.Time, string) { return x.CreatedAt, x.ID })
		return err
	})
	if err != nil {
		return nil, "", fmt.Errorf("list candidates: %w", mapError(err))
	}
	return items, next, nil
}

// ListInterviews returns a page of the tenant's interviews, optionally only
// those in one state or with one external id.
func (db *DB) ListInterviews(ctx context.Context, scope session.Scope, f session.InterviewFilter, p session.Page) ([]session.Interview, string, error) {
	var items []session.Interview
	var next string
	err := db.inScope(ctx, scope, func(tx pgx.Tx) error {
		q := `SELECT ` + prefixed("t.", interviewColumns) + ` FROM interviews.interview_sessions t`
		var args []any
		var where []string
		if f.Status != "" {
			args = append(args, f.Status)
			where = append(where, fmt.Sprintf("t.status = $%d", len(args)))
		}
		if f.ExternalID != "" {
			args = append(args, f.ExternalID)
			where = append(where, fmt.Sprintf("t.external_id = $%d", len(args)))
		}
		if len(where) > 0 {
			q += " WHERE " + strings.Join(where, " AND ")
		}
		var err error
		items, next, err = pageQuery(ctx, tx, q, len(where) > 0, args, p,
			func(r pgx.CollectableRow) (session.Interview, error) { return scanInterview(r) },
			func(x session.Interview) (time.Time, string) { return x.CreatedAt, x.ID })
		return err
	})
	if err != nil {
		return nil, "", fmt.Errorf("list interviews: %w", mapError(err))
	}
	return items, next, nil
}

// prefixed qualifies every column of a comma-separated list.
func prefixed(prefix, columns string) string {
	parts := strings.Split(columns, ",")
	for i, c := range parts {
		parts[i] = prefix + strings.TrimSpace(c)
	}
	return strings.Join(parts, ", ")
}
