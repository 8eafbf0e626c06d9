package bench

import (
	"context"
	"io"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/interviewvm/controlplane/pkg/flymachines/flymachinestest"
	"github.com/interviewvm/controlplane/pkg/postgres/postgrestest"
)

// TestStartInProcess starts the controller the profiles use, on the fly
// provider against the fake Machines API and a fresh database, and checks
// it answers as the binary would: ready, and refusing a request without a
// token with the contract's error.
func TestStartInProcess(t *testing.T) {
	const token, app = "fly-test-token", "bench-sessions"
	fake := flymachinestest.NewServer(flymachinestest.WithToken(token), flymachinestest.WithApps(app))
	defer fake.Close()
	env := map[string]string{
		"DATABASE_URL": postgrestest.NewURL(t), "LISTEN_ADDR": "127.0.0.1:0", "JWT_SECRET": JWTSecret,
		"PROVIDER": "fly", "FLY_API_URL": fake.URL, "FLY_API_TOKEN": token, "FLY_APP": app,
		"SESSION_IMAGE": "registry.fly.io/bench:test", "LOG_FORMAT": "json",
	}
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()
	c, err := startInProcess(ctx, env, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	defer c.stop()
	if c.PID != os.Getpid() {
		t.Errorf("PID = %d, want the harness's %d", c.PID, os.Getpid())
	}
	for path, want := range map[string]int{"/readyz": http.StatusOK, "/v1/interviews": http.StatusUnauthorized} {
		res, err := http.Get(c.Base + path)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(res.Body)
		res.Body.Close()
		if res.StatusCode != want {
			t.Errorf("GET %s = %d %s, want %d", path, res.StatusCode, body, want)
		}
	}
}

// TestStartInProcessRefusesABadConfiguration: the controller's own
// validation applies (PROVIDER=fly without its settings).
func TestStartInProcessRefusesABadConfiguration(t *testing.T) {
	env := map[string]string{"DATABASE_URL": "postgres://unused", "JWT_SECRET": JWTSecret, "PROVIDER": "fly"}
	c, err := startInProcess(t.Context(), env, io.Discard)
	if err == nil {
		c.stop()
		t.Fatal("an in-process controller without FLY_APP started")
	}
	if !strings.Contains(err.Error(), "FLY_APP") {
		t.Errorf("error %q does not name FLY_APP", err)
	}
}
