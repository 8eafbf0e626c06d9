package postgres

import (
	"context"
	"fmt"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/interviewvm/controlplane/pkg/session"
)

const apiKeyColumns = `id, tenant_id, name, role, prefix, created_at, last_used_at`

func scanAPIKey(r pgx.Row) (session.APIKey, error) {
	var k session.APIKey
	err := r.Scan(&k.ID, &k.TenantID, &k.Name, &k.Role, &k.Prefix, &k.CreatedAt, &k.LastUsedAt)
	return k, err
}

// CreateAPIKey stores a tenant API key by the SHA-256 of its secret.
func (db *DB) CreateAPIKey(ctx context.Context, scope session.Scope, k session.APIKey, keyHash []byte) (session.APIKey, error) {
	k.ID = uuid.NewString()
	k.TenantID = scope.TenantID
	err := db.inScope(ctx, scope, func(tx pgx.Tx) error {
		return tx.QueryRow(ctx, `INSERT INTO interviews.api_keys (id, tenant_id, name, role, key_hash, prefix)
			VALUES ($1, $2, $3, $4, $5, $6) RETURNING created_at`,
			k.ID, k.TenantID, k.Name, k.Role, keyHash, k.Prefix).Scan(&k.CreatedAt)
	})
	if err != nil {
		return session.APIKey{}, fmt.Errorf("create api key: %w", mapError(err))
	}
	return k, nil
}

// ListAPIKeys returns a page of the tenant's API keys, newest first.
func (db *DB) ListAPIKeys(ctx context.Context, scope session.Scope, p session.Page) ([]session.APIKey, string, error) {
	var items []session.APIKey
	var next string
	err := db.inScope(ctx, scope, func(tx pgx.Tx) error {
		var err error
		items, next, err = pageQuery(ctx, tx, `SELECT `+prefixed("t.", apiKeyColumns)+` FROM interviews.api_keys t`,
			false, nil, p,
			func(r pgx.CollectableRow) (session.APIKey, error) { return scanAPIKey(r) },
			func(x session.APIKey) (time.Time, string) { return x.CreatedAt, x.ID })
		return err
	})
	if err != nil {
		return nil, "", fmt.Errorf("list api keys: %w", mapError(err))
	}
	return items, next, nil
}

// DeleteAPIKey deletes one of the tenant's API keys: from then on it
// authenticates nothing, on every replica.
func (db *DB) DeleteAPIKey(ctx context.Context, scope session.Scope, id string) error {
	err := db.inScope(ctx, scope, func(tx pgx.Tx) error {
		tag, err := tx.Exec(ctx, `DELETE FROM interviews.api_keys WHERE id = $1`, id)
		if err != nil {
			return err
		}
		if tag.RowsAffected() == 0 {
			return pgx.ErrNoRows
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("delete api key %s: %w", id, mapError(err))
	}
	return nil
}

// APIKeyByHash returns the API key whose secret hashes to keyHash, of any
// tenant: authentication has to find the key before it knows the tenant,
// so this one query runs in the system scope. It records the use in
// last_used_at, at most once a minute per key. No such key: a
// session.ENOTFOUND error.
func (db *DB) APIKeyByHash(ctx context.Context, keyHash []byte) (session.APIKey, error) {
	var k session.APIKey
	err := db.inScope(ctx, session.SystemScope(), func(tx pgx.Tx) error {
		var err error
		// The data-modifying CTE runs whether or not it is referenced.
		k, err = scanAPIKey(tx.QueryRow(ctx, `WITH touched AS (
				UPDATE interviews.api_keys SET last_used_at = date_trunc('second', now())
				WHERE key_hash = $1 AND (last_used_at IS NULL OR last_used_at < now() - interval '1 minute')
				RETURNING id)
			SELECT `+apiKeyColumns+` FROM interviews.api_keys WHERE key_hash = $1`, keyHash))
		return err
	})
	if err != nil {
		return session.APIKey{}, fmt.Errorf("look up api key: %w", mapError(err))
	}
	return k, nil
}
