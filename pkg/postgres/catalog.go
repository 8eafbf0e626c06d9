package postgres

import (
	"context"
	"fmt"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/interviewvm/controlplane/pkg/session"
)

// CreatePosition stores a position and its competencies in order.
func (db *DB) CreatePosition(ctx context.Context, scope session.Scope, p session.PositionRecord) (session.PositionRecord, error) {
	p.ID = uuid.NewString()
	p.TenantID = scope.TenantID
	err := db.inScope(ctx, scope, func(tx pgx.Tx) error {
		err := tx.QueryRow(ctx, `INSERT INTO interviews.positions (id, tenant_id, title, description)
			VALUES ($1, $2, $3, $4) RETURNING created_at`, p.ID, p.TenantID, p.Title, p.Description).Scan(&p.CreatedAt)
		if err != nil {
			return err
		}
		for i, c := range p.Competencies {
			_, err := tx.Exec(ctx, `INSERT INTO interviews.position_competencies
				(position_id, tenant_id, ordinal, name, weight, description) VALUES ($1, $2, $3, $4, $5, $6)`,
				p.ID, p.TenantID, i, c.Name, c.Weight, c.Description)
			if err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return session.PositionRecord{}, fmt.Errorf("create position: %w", mapError(err))
	}
	return p, nil
}

// Position returns one position with its competencies.
func (db *DB) Position(ctx context.Context, scope session.Scope, id string) (session.PositionRecord, error) {
	var p session.PositionRecord
	err := db.inScope(ctx, scope, func(tx pgx.Tx) error {
		var err error
		p, err = positionTx(ctx, tx, id)
		return err
	})
	if err != nil {
		return session.PositionRecord{}, fmt.Errorf("get position %s: %w", id, mapError(err))
	}
	return p, nil
}

func positionTx(ctx context.Context, tx pgx.Tx, id string) (session.PositionRecord, error) {
	var p session.PositionRecord
	err := tx.QueryRow(ctx, `SELECT id, tenant_id, title, description, created_at
		FROM interviews.positions WHERE id = $1`, id).Scan(&p.ID, &p.TenantID, &p.Title, &p.Description, &p.CreatedAt)
	if err != nil {
		return p, err
	}
	rows, err := tx.Query(ctx, `SELECT name, weight, description FROM interviews.position_competencies
		WHERE position_id = $1 ORDER BY ordinal`, id)
	if err != nil {
		return p, err
	}
	p.Competencies, err = pgx.CollectRows(rows, func(r pgx.CollectableRow) (session.Competency, error) {
		var c session.Competency
		err := r.Scan(&c.Name, &c.Weight, &c.Description)
		return c, err
	})
	return p, err
}

// CreateCandidate stores a candidate.
func (db *DB) CreateCandidate(ctx context.Context, scope session.Scope, c session.Candidate) (session.Candidate, error) {
	c.ID = uuid.NewString()
	c.TenantID = scope.TenantID
	err := db.inScope(ctx, scope, func(tx pgx.Tx) error {
		c.Metadata = metadataOf(c.Metadata)
		return tx.QueryRow(ctx, `INSERT INTO interviews.candidates (id, tenant_id, full_name, email, external_id, metadata)
			VALUES ($1, $2, $3, $4, $5, $6) RETURNING created_at`, c.ID, c.TenantID, c.FullName, c.Email,
			c.ExternalID, c.Metadata).Scan(&c.CreatedAt)
	})
	if err != nil {
		return session.Candidate{}, fmt.Errorf("create candidate: %w", mapError(err))
	}
	return c, nil
}

// Candidate returns one candidate.
func (db *DB) Candidate(ctx context.Context, scope session.Scope, id string) (session.Candidate, error) {
	var c session.Candidate
	err := db.inScope(ctx, scope, func(tx pgx.Tx) error {
		var err error
		c, err = candidateTx(ctx, tx, id, false)
		return err
	})
	if err != nil {
		return session.Candidate{}, fmt.Errorf("get candidate %s: %w", id, mapError(err))
	}
	return c, nil
}
