package main

import (
	"errors"
	"os/exec"
	"strings"
	"testing"
)

// TestDeps keeps the VM binary small and free of the controller's
// dependencies (docs/architecture.md, "Packages"): it must never link echo, pgx or the Fly
// client, nor the controller's own packages.
func TestDeps(t *testing.T) {
	const module = "github.com/interviewvm/controlplane"
	// A path matches itself and every package under it.
	banned := map[string]string{
		"github.com/labstack/echo":         "HTTP framework of the controller",
		"github.com/labstack/echo-contrib": "HTTP middleware of the controller",
		"github.com/jackc/pgx":             "database driver of the controller",
		module + "/pkg/postgres":           "SQL lives in the controller only",
		module + "/pkg/flymachines":        "the Fly client belongs to the controller",
		module + "/pkg/controlapi":         "the controller's API handlers",
		module + "/pkg/provision":          "the controller's lifecycle",
	}
	out, err := exec.Command("go", "list", "-deps", ".").Output()
	if err != nil {
		msg := ""
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			msg = string(ee.Stderr)
		}
		t.Fatalf("go list -deps: %v\n%s", err, msg)
	}
	deps := strings.Fields(string(out))
	if len(deps) < 10 {
		t.Fatalf("go list -deps listed only %d packages: %q", len(deps), out)
	}
	for _, dep := range deps {
		for prefix, why := range banned {
			if dep == prefix || strings.HasPrefix(dep, prefix+"/") {
				t.Errorf("sessionvm links %s (%s)", dep, why)
			}
		}
	}
}
