package postgres

import (
	"context"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5"

	"github.com/interviewvm/controlplane/pkg/session"
)

// ClaimIdempotencyKey takes the tenant's Idempotency-Key for the attempt
// r.Claim when the key is new, expired, or held by an attempt with the same
// request that has run longer than r.Lease (its process died). Otherwise it
// returns the key's record as it stands: the first request's hash and, once
// that request has finished, its stored answer.
func (db *DB) ClaimIdempotencyKey(ctx context.Context, scope session.Scope, r session.IdempotencyRequest) (session.IdempotencyRecord, error) {
	var rec session.IdempotencyRecord
	err := db.inScope(ctx, scope, func(tx pgx.Tx) error {
		// ON CONFLICT DO UPDATE locks the existing row even when its WHERE
		// refuses the update, so the read below sees it as it stays until
		// this transaction ends.
		var claim string
		err := tx.QueryRow(ctx, `INSERT INTO interviews.idempotency_keys
				(tenant_id, key_hash, request_hash, claim, claimed_at, expires_at)
			VALUES ($1, $2, $3, $4, now(), now() + $5::interval)
			ON CONFLICT (tenant_id, key_hash) DO UPDATE SET request_hash = EXCLUDED.request_hash,
				claim = EXCLUDED.claim, claimed_at = now(), status = NULL, content_type = NULL,
				response = NULL, expires_at = EXCLUDED.expires_at
			WHERE idempotency_keys.expires_at <= now()
				OR (idempotency_keys.status IS NULL AND idempotency_keys.request_hash = EXCLUDED.request_hash
					AND idempotency_keys.claimed_at <= now() - $6::interval)
			RETURNING claim::text`,
			scope.TenantID, r.KeyHash, r.RequestHash, r.Claim, r.TTL, r.Lease).Scan(&claim)
		if err == nil {
			rec.Claimed = claim == r.Claim
			return nil
		}
		if !errors.Is(err, pgx.ErrNoRows) {
			return err
		}
		var status *int
		var ct *string
		err = tx.QueryRow(ctx, `SELECT request_hash, status, content_type, response
			FROM interviews.idempotency_keys WHERE tenant_id = $1 AND key_hash = $2`,
			scope.TenantID, r.KeyHash).Scan(&rec.RequestHash, &status, &ct, &rec.Response)
		if status != nil {
			rec.Status = *status
		}
		if ct != nil {
			rec.ContentType = *ct
		}
		return err
	})
	if err != nil {
		return session.IdempotencyRecord{}, fmt.Errorf("claim idempotency key: %w", mapError(err))
	}
	return rec, nil
}

// CompleteIdempotencyKey stores the answer of the attempt claim under the
// tenant's key. It does nothing when another attempt has taken the key
// over.
//
// subjects are the ids the answer names: erasing one of them erases the
// stored answer too.
func (db *DB) CompleteIdempotencyKey(ctx context.Context, scope session.Scope, keyHash []byte, claim string,
	status int, contentType string, response []byte, subjects []string) error {
	if subjects == nil {
		subjects = []string{}
	}
	err := db.inScope(ctx, scope, func(tx pgx.Tx) error {
		_, err := tx.Exec(ctx, `UPDATE interviews.idempotency_keys
			SET status = $4, content_type = $5, response = $6, subject_ids = $7::uuid[]
			WHERE tenant_id = $1 AND key_hash = $2 AND claim = $3 AND status IS NULL`,
			scope.TenantID, keyHash, claim, status, contentType, response, subjects)
		return err
	})
	if err != nil {
		return fmt.Errorf("store idempotent answer: %w", mapError(err))
	}
	return nil
}

// ReleaseIdempotencyKey forgets the tenant's key held by the attempt
// claim, whose request failed, so a retry runs it again.
func (db *DB) ReleaseIdempotencyKey(ctx context.Context, scope session.Scope, keyHash []byte, claim string) error {
	err := db.inScope(ctx, scope, func(tx pgx.Tx) error {
		_, err := tx.Exec(ctx, `DELETE FROM interviews.idempotency_keys
			WHERE tenant_id = $1 AND key_hash = $2 AND claim = $3 AND status IS NULL`,
			scope.TenantID, keyHash, claim)
		return err
	})
	if err != nil {
		return fmt.Errorf("release idempotency key: %w", mapError(err))
	}
	return nil
}

// DeleteExpiredIdempotencyKeys deletes the expired idempotency keys of
// every tenant and returns how many it deleted. The reconciler calls it.
func (db *DB) DeleteExpiredIdempotencyKeys(ctx context.Context) (int64, error) {
	var n int64
	err := db.inScope(ctx, session.SystemScope(), func(tx pgx.Tx) error {
		tag, err := tx.Exec(ctx, `DELETE FROM interviews.idempotency_keys WHERE expires_at <= now()`)
		n = tag.RowsAffected()
		return err
	})
	if err != nil {
		return 0, fmt.Errorf("delete expired idempotency keys: %w", mapError(err))
	}
	return n, nil
}
