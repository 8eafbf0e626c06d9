package controlapi_test

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"math/big"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/interviewvm/controlplane/pkg/controlapi"
	"github.com/interviewvm/controlplane/pkg/provision"
	"github.com/interviewvm/controlplane/pkg/session"
)

// jwks serves a JWK set that the test can extend.
type jwks struct {
	mu    sync.Mutex
	keys  []map[string]any
	hits  int
	srv   *httptest.Server
	rsa   *rsa.PrivateKey
	ec    *ecdsa.PrivateKey
	later *rsa.PrivateKey // published only when the test says so
}

func b64(b []byte) string { return base64.RawURLEncoding.EncodeToString(b) }

func rsaJWK(kid string, k *rsa.PublicKey) map[string]any {
	return map[string]any{"kty": "RSA", "kid": kid, "alg": "RS256", "use": "sig",
		"n": b64(k.N.Bytes()), "e": b64(big.NewInt(int64(k.E)).Bytes())}
}

func newJWKS(t *testing.T) *jwks {
	t.Helper()
	j := &jwks{}
	var err error
	if j.rsa, err = rsa.GenerateKey(rand.Reader, 2048); err != nil {
		t.Fatal(err)
	}
	if j.later, err = rsa.GenerateKey(rand.Reader, 2048); err != nil {
		t.Fatal(err)
	}
	if j.ec, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader); err != nil {
		t.Fatal(err)
	}
	pub := j.ec.PublicKey
	x, y := make([]byte, 32), make([]byte, 32)
	pub.X.FillBytes(x) //nolint:staticcheck // the JWK needs the raw coordinates
	pub.Y.FillBytes(y) //nolint:staticcheck
	j.keys = []map[string]any{
		rsaJWK("rsa-1", &j.rsa.PublicKey),
		{"kty": "EC", "kid": "ec-1", "alg": "ES256", "use": "sig", "crv": "P-256", "x": b64(x), "y": b64(y)},
	}
	j.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		j.mu.Lock()
		defer j.mu.Unlock()
		j.hits++
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(map[string]any{"keys": j.keys})
	}))
	t.Cleanup(j.srv.Close)
	return j
}

func (j *jwks) publishLater() {
	j.mu.Lock()
	defer j.mu.Unlock()
	j.keys = append(j.keys, rsaJWK("rsa-2", &j.later.PublicKey))
}

type claims map[string]any

func supabase(tenant string, extra claims) jwt.MapClaims {
	c := jwt.MapClaims{"sub": "user-1", "aud": "authenticated", "role": "authenticated",
		"exp": time.Now().Add(time.Hour).Unix(), "iat": time.Now().Unix(), "tenant_id": tenant, "user_role": "admin"}
	for k, v := range extra {
		if v == nil {
			delete(c, k)
		} else {
			c[k] = v
		}
	}
	return c
}

func sign(t *testing.T, method jwt.SigningMethod, kid string, key any, c jwt.MapClaims) string {
	t.Helper()
	tok := jwt.NewWithClaims(method, c)
	if kid != "" {
		tok.Header["kid"] = kid
	}
	s, err := tok.SignedString(key)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestAuthenticationMatrix(t *testing.T) {
	keys := newJWKS(t)
	e := newEnv(t, func(c *controlapi.Config, _ *provision.Config) {
		c.Auth.JWKSURL, c.Auth.UnknownKIDRefresh = keys.srv.URL, 10*time.Millisecond
	})
	tenantA, tenantB := newTenant(), newTenant()
	adminA := tenantToken(t, tenantA, "admin")
	id := e.interview(adminA)
	path := "/v1/interviews/" + id

	pubPEM := pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: must(x509.MarshalPKIXPublicKey(&keys.rsa.PublicKey))})
	none, err := jwt.NewWithClaims(jwt.SigningMethodNone, supabase(tenantA, nil)).SignedString(jwt.UnsafeAllowNoneSignatureType)
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name   string
		token  string
		status int
	}{
		{"no token", "", 401},
		{"garbage", "not.a.jwt", 401},
		{"alg none", none, 401},
		{"HS256 signed with the RS256 public key", sign(t, jwt.SigningMethodHS256, "rsa-1", pubPEM, supabase(tenantA, nil)), 401},
		{"expired", sign(t, jwt.SigningMethodRS256, "rsa-1", keys.rsa, supabase(tenantA, claims{"exp": time.Now().Add(-time.Hour).Unix()})), 401},
		{"no expiry", sign(t, jwt.SigningMethodRS256, "rsa-1", keys.rsa, supabase(tenantA, claims{"exp": nil})), 401},
		{"not yet valid", sign(t, jwt.SigningMethodRS256, "rsa-1", keys.rsa, supabase(tenantA, claims{"nbf": time.Now().Add(time.Hour).Unix()})), 401},
		{"wrong audience", sign(t, jwt.SigningMethodRS256, "rsa-1", keys.rsa, supabase(tenantA, claims{"aud": "anon"})), 401},
		{"missing tenant", sign(t, jwt.SigningMethodRS256, "rsa-1", keys.rsa, supabase("", claims{"tenant_id": nil})), 401},
		{"tenant not a uuid", sign(t, jwt.SigningMethodRS256, "rsa-1", keys.rsa, supabase("acme", nil)), 401},
		{"RS256 key under the wrong kid", sign(t, jwt.SigningMethodRS256, "ec-1", keys.rsa, supabase(tenantA, nil)), 401},
		{"signed by an unpublished key", sign(t, jwt.SigningMethodRS256, "rsa-9", keys.later, supabase(tenantA, nil)), 401},
		{"HS256 with a wrong secret", must(controlapi.DevToken("another-secret-0123456789", "authenticated", tenantA, "admin", time.Hour)), 401},
		{"unknown role", sign(t, jwt.SigningMethodRS256, "rsa-1", keys.rsa, supabase(tenantA, claims{"user_role": "root"})), 403},
		{"RS256 from the JWKS", sign(t, jwt.SigningMethodRS256, "rsa-1", keys.rsa, supabase(tenantA, nil)), 200},
		{"ES256 from the JWKS", sign(t, jwt.SigningMethodES256, "ec-1", keys.ec, supabase(tenantA, nil)), 200},
		{"tenant in app_metadata", sign(t, jwt.SigningMethodRS256, "rsa-1", keys.rsa,
			supabase("", claims{"tenant_id": nil, "app_metadata": map[string]any{"tenant_id": tenantA}})), 200},
		{"HS256 shared secret", adminA, 200},
		{"another tenant's reader", sign(t, jwt.SigningMethodES256, "ec-1", keys.ec, supabase(tenantB, nil)), 404},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r := e.do("GET", path, tc.token, nil)
			if r.status != tc.status {
				t.Fatalf("GET = %d %s, want %d", r.status, r.body, tc.status)
			}
			if tc.status >= 400 && (r.code() == "" || !strings.Contains(string(r.body), `"message"`)) {
				t.Fatalf("error body = %s", r.body)
			}
		})
	}

	// A key published after start is found: the unknown kid refreshes the set.
	keys.publishLater()
	time.Sleep(20 * time.Millisecond) // past the unknown-kid refresh limit the test configured
	late := sign(t, jwt.SigningMethodRS256, "rsa-2", keys.later, supabase(tenantA, nil))
	if r := e.do("GET", path, late, nil); r.status != 200 {
		t.Fatalf("token of a newly published key = %d %s", r.status, r.body)
	}

	// Roles and tenants on the writing routes.
	viewerA := tenantToken(t, tenantA, "viewer")
	adminB := tenantToken(t, tenantB, "admin")
	for _, tc := range []struct {
		name, method, path, tok string
		status                  int
	}{
		{"viewer starts", "POST", path + "/start", viewerA, 403},
		{"viewer ends", "POST", path + "/end", viewerA, 403},
		{"viewer creates", "POST", "/v1/candidates", viewerA, 403},
		{"B reads", "GET", path, adminB, 404},
		{"B starts", "POST", path + "/start", adminB, 404},
		{"B ends", "POST", path + "/end", adminB, 404},
		{"B cancels", "POST", path + "/cancel", adminB, 404},
		{"B reads events", "GET", path + "/events", adminB, 404},
		{"B reads the transcript", "GET", path + "/transcript", adminB, 404},
		{"B streams", "GET", path + "/transcript/stream", adminB, 404},
		{"B routes SDP", "POST", path + "/session/sdp", adminB, 404},
		{"B asks for a client secret", "POST", path + "/session/token", adminB, 404},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var body any
			var headers []string
			switch {
			case strings.HasSuffix(tc.path, "candidates"):
				body = map[string]any{"full_name": "X", "email": "x@example.com"}
			case strings.HasSuffix(tc.path, "sdp"):
				body, headers = "v=0\r\n", []string{"Content-Type", "application/sdp"}
			}
			r := e.do(tc.method, tc.path, tc.tok, body, headers...)
			if r.status != tc.status {
				t.Fatalf("%s %s = %d %s, want %d", tc.method, tc.path, r.status, r.body, tc.status)
			}
		})
	}
	if st := e.must(200, "GET", path, adminA, nil)["status"]; st != string(session.StateScheduled) {
		t.Fatalf("refused requests changed the interview: %v", st)
	}
}

func TestJWKSOnlyRefusesHS256(t *testing.T) {
	keys := newJWKS(t)
	e := newEnv(t, func(c *controlapi.Config, _ *provision.Config) {
		c.Auth = controlapi.AuthConfig{JWKSURL: keys.srv.URL, AccessSecret: "access-secret-0123456789"}
	})
	tenant := newTenant()
	if r := e.do("GET", "/v1/candidates", tenantToken(t, tenant, "admin"), nil); r.status != 401 {
		t.Fatalf("HS256 token without JWT_SECRET = %d", r.status)
	}
	e.must(200, "GET", "/v1/candidates", sign(t, jwt.SigningMethodRS256, "rsa-1", keys.rsa, supabase(tenant, nil)), nil)
}

func must[T any](v T, err error) T {
	if err != nil {
		panic(err)
	}
	return v
}
