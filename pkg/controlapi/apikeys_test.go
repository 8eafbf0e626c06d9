package controlapi_test

import (
	"crypto/sha256"
	"strings"
	"testing"
)

// createKey creates an API key with tok and returns the creation answer.
func (e *env) createKey(tok, name, role string) map[string]any {
	e.t.Helper()
	k := e.must(201, "POST", "/v1/api-keys", tok, map[string]any{"name": name, "role": role})
	if key, _ := k["key"].(string); !strings.HasPrefix(key, "ik_") || len(key) != 46 {
		e.t.Fatalf("created key %q is not ik_ and 43 characters", key)
	}
	return k
}

// TestAPIKeyMatrix: what a tenant API key may do, by role and tenant, and
// that revoking it holds at once on another replica.
func TestAPIKeyMatrix(t *testing.T) {
	e := newEnv(t)
	replica := newEnvOn(t, e.db, e.dbURL) // a second controller on the same database
	tenantA, tenantB := newTenant(), newTenant()
	adminA := tenantToken(t, tenantA, "admin")

	admin := e.createKey(adminA, "  ATS sync  ", "admin")
	adminKey := admin["key"].(string)
	if admin["name"] != "ATS sync" || admin["role"] != "admin" || admin["prefix"] != adminKey[:11] || admin["last_used_at"] != nil {
		t.Fatalf("created key = %v", admin)
	}
	// Only the hash is stored: the secret appears in no column.
	sum := sha256.Sum256([]byte(adminKey))
	if n := e.count(`SELECT count(*) FROM interviews.api_keys WHERE key_hash = $1 AND tenant_id = $2`, sum[:], tenantA); n != 1 {
		t.Fatalf("%d keys stored by their hash, want 1", n)
	}
	if n := e.count(`SELECT count(*) FROM interviews.api_keys k WHERE strpos(k::text, $1) > 0`, adminKey[3:]); n != 0 {
		t.Fatal("the key's secret is stored in clear")
	}

	// The key acts for its tenant with its role, on either replica.
	id := e.interview(adminKey)
	replica.must(200, "GET", "/v1/interviews/"+id, adminKey, nil)
	e.must(200, "GET", "/v1/interviews/"+id, adminA, nil) // the JWT of the same tenant sees it
	list := e.must(200, "GET", "/v1/api-keys", adminKey, nil)
	items := list["items"].([]any)
	if len(items) != 1 {
		t.Fatalf("list = %v", list)
	}
	listed := items[0].(map[string]any)
	if _, leaked := listed["key"]; leaked || listed["prefix"] != adminKey[:11] || listed["last_used_at"] == nil {
		t.Fatalf("listed key = %v: want no secret, the prefix, and last_used_at set", listed)
	}

	// viewer: reads, never writes.
	viewerKey := e.createKey(adminKey, "dashboard", "viewer")["key"].(string)
	e.must(200, "GET", "/v1/interviews/"+id, viewerKey, nil)
	if r := e.do("POST", "/v1/candidates", viewerKey, map[string]any{"full_name": "V", "email": "v@example.com"}); r.status != 403 || r.code() != "forbidden" {
		t.Fatalf("viewer key writes: %d %s", r.status, r.body)
	}
	if r := e.do("POST", "/v1/interviews/"+id+"/cancel", viewerKey, nil); r.status != 403 {
		t.Fatalf("viewer key cancels: %d %s", r.status, r.body)
	}

	// recruiter: writes, but manages no keys, by JWT or by key.
	recruiterKey := e.createKey(adminA, "scheduler", "recruiter")["key"].(string)
	e.must(201, "POST", "/v1/candidates", recruiterKey, map[string]any{"full_name": "R", "email": "r@example.com"})
	for _, tok := range []string{recruiterKey, viewerKey, tenantToken(t, tenantA, "recruiter"), tenantToken(t, tenantA, "viewer")} {
		if r := e.do("POST", "/v1/api-keys", tok, map[string]any{"name": "x", "role": "admin"}); r.status != 403 {
			t.Fatalf("non-admin creates a key: %d %s", r.status, r.body)
		}
		if r := e.do("GET", "/v1/api-keys", tok, nil); r.status != 403 {
			t.Fatalf("non-admin lists keys: %d %s", r.status, r.body)
		}
	}

	// Another tenant's key sees none of tenant A's objects.
	keyB := e.createKey(tenantToken(t, tenantB, "admin"), "b", "admin")
	if r := e.do("GET", "/v1/interviews/"+id, keyB["key"].(string), nil); r.status != 404 {
		t.Fatalf("tenant B's key reads tenant A's interview: %d %s", r.status, r.body)
	}
	if r := e.do("DELETE", "/v1/api-keys/"+admin["id"].(string), keyB["key"].(string), nil); r.status != 404 {
		t.Fatalf("tenant B deletes tenant A's key: %d %s", r.status, r.body)
	}
	if l := e.must(200, "GET", "/v1/interviews", keyB["key"].(string), nil); len(l["items"].([]any)) != 0 {
		t.Fatalf("tenant B lists tenant A's interviews: %v", l)
	}

	// Revoked on this replica: refused at once on the other.
	replica.must(200, "GET", "/v1/interviews/"+id, viewerKey, nil)
	viewerID := ""
	for _, it := range e.must(200, "GET", "/v1/api-keys", adminA, nil)["items"].([]any) {
		if k := it.(map[string]any); k["name"] == "dashboard" {
			viewerID = k["id"].(string)
		}
	}
	e.must(204, "DELETE", "/v1/api-keys/"+viewerID, adminKey, nil)
	if r := replica.do("GET", "/v1/interviews/"+id, viewerKey, nil); r.status != 401 || r.code() != "unauthenticated" {
		t.Fatalf("revoked key on another replica: %d %s", r.status, r.body)
	}
	if r := e.do("DELETE", "/v1/api-keys/"+viewerID, adminKey, nil); r.status != 404 {
		t.Fatalf("deleting a deleted key: %d %s", r.status, r.body)
	}

	// Malformed and unknown keys.
	for _, bad := range []string{"ik_", "ik_" + strings.Repeat("A", 43), adminKey[:45] + "!", adminKey + "A"} {
		if r := e.do("GET", "/v1/interviews", bad, nil); r.status != 401 {
			t.Fatalf("key %q: %d %s", bad, r.status, r.body)
		}
	}
	// The session routes take no API keys.
	if r := e.do("POST", "/v1/interviews/"+id+"/session/token", adminKey, nil); r.status != 401 {
		t.Fatalf("API key on a session route: %d %s", r.status, r.body)
	}
}

// TestAPIKeyCreateRefusals: bad names and roles are 400 and store nothing.
func TestAPIKeyCreateRefusals(t *testing.T) {
	e := newEnv(t)
	tok := tenantToken(t, newTenant(), "admin")
	for _, body := range []string{
		`{"name":"","role":"admin"}`, `{"name":"   ","role":"admin"}`, `{"name":"k","role":"owner"}`,
		`{"name":"k"}`, `{"role":"admin"}`, `{"name":"` + strings.Repeat("n", 101) + `","role":"admin"}`,
		`{"name":"a\u0000b","role":"admin"}`, `{"name":"a\nb","role":"admin"}`, `{"name":"k","role":"admin","key":"ik_x"}`,
		`{"name":5,"role":"admin"}`, `[]`, ``,
	} {
		if r := e.do("POST", "/v1/api-keys", tok, body); r.status != 400 || r.code() != "invalid_request" {
			t.Errorf("POST /v1/api-keys %s = %d %s, want 400 invalid_request", body, r.status, r.body)
		}
	}
	if r := e.do("DELETE", "/v1/api-keys/not-a-uuid", tok, nil); r.status != 400 {
		t.Errorf("DELETE with a bad id = %d %s", r.status, r.body)
	}
	if n := e.count(`SELECT count(*) FROM interviews.api_keys`); n != 0 {
		t.Fatalf("refused creates stored %d keys", n)
	}
	e.createKey(tok, strings.Repeat("n", 100), "viewer")
}
