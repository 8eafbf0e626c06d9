package postgres_test

import (
	"bytes"
	"context"
	"testing"

	"github.com/google/uuid"

	"github.com/interviewvm/controlplane/pkg/postgres/postgrestest"
	"github.com/interviewvm/controlplane/pkg/session"
)

func TestAPIKeysAreTenantScoped(t *testing.T) {
	db, _ := postgrestest.New(t)
	ctx := context.Background()
	a, b := session.TenantScope(uuid.NewString()), session.TenantScope(uuid.NewString())
	hash := bytes.Repeat([]byte{7}, 32)
	k, err := db.CreateAPIKey(ctx, a, session.APIKey{Name: "ci", Role: "viewer", Prefix: "ik_abcdefgh"}, hash)
	if err != nil {
		t.Fatal(err)
	}
	if items, _, err := db.ListAPIKeys(ctx, b, session.Page{Limit: 10}); err != nil || len(items) != 0 {
		t.Fatalf("tenant b lists %v, %v", items, err)
	}
	if err := db.DeleteAPIKey(ctx, b, k.ID); session.ErrorCode(err) != session.ENOTFOUND {
		t.Fatalf("tenant b deletes a's key: %v", err)
	}
	// Authentication finds the key by its hash, whatever the tenant, and
	// records the use.
	got, err := db.APIKeyByHash(ctx, hash)
	if err != nil || got.ID != k.ID || got.TenantID != a.TenantID || got.Role != "viewer" || got.LastUsedAt != nil {
		t.Fatalf("by hash: %+v, %v", got, err)
	}
	again, err := db.APIKeyByHash(ctx, hash)
	if err != nil || again.LastUsedAt == nil {
		t.Fatalf("second lookup: %+v, %v: want last_used_at set by the first", again, err)
	}
	if _, err := db.APIKeyByHash(ctx, bytes.Repeat([]byte{8}, 32)); session.ErrorCode(err) != session.ENOTFOUND {
		t.Fatalf("unknown hash: %v", err)
	}
	if _, err := db.CreateAPIKey(ctx, b, session.APIKey{Name: "dup", Role: "admin", Prefix: "ik_x"}, hash); session.ErrorCode(err) != session.ECONFLICT {
		t.Fatalf("a second key with the same hash: %v", err)
	}
	if err := db.DeleteAPIKey(ctx, a, k.ID); err != nil {
		t.Fatal(err)
	}
	if _, err := db.APIKeyByHash(ctx, hash); session.ErrorCode(err) != session.ENOTFOUND {
		t.Fatalf("deleted key found: %v", err)
	}
}

// TestEveryTenantTableForcesRowSecurity: every table with a tenant_id
// column has row-level security that holds for its owner too.
func TestEveryTenantTableForcesRowSecurity(t *testing.T) {
	db, _ := postgrestest.New(t)
	rows, err := db.Pool.Query(context.Background(), `SELECT c.relname, c.relrowsecurity, c.relforcerowsecurity
		FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
		WHERE n.nspname = 'interviews' AND c.relkind = 'r' AND EXISTS (
			SELECT 1 FROM pg_attribute a WHERE a.attrelid = c.oid AND a.attname = 'tenant_id' AND NOT a.attisdropped)`)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	seen := map[string]bool{}
	for rows.Next() {
		var name string
		var enabled, forced bool
		if err := rows.Scan(&name, &enabled, &forced); err != nil {
			t.Fatal(err)
		}
		seen[name] = true
		if !enabled || !forced {
			t.Errorf("table %s: row security enabled %v, forced %v", name, enabled, forced)
		}
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"api_keys", "idempotency_keys", "interview_sessions"} {
		if !seen[want] {
			t.Errorf("table %s not checked", want)
		}
	}
}
