package bench

import (
	"context"
	"testing"
	"time"
)

// TestFloorVM builds the floor VM of case 1 and runs it as the case does:
// it must report ready to the stand-in controller with its session's token
// (which the stub checks) and answer a request sent to its inherited
// listener at exec.
func TestFloorVM(t *testing.T) {
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()
	e := &Env{OutDir: t.TempDir(), Log: t.Logf}
	bin, err := e.buildFloorVM(ctx)
	if err != nil {
		t.Fatal(err)
	}
	stub := NewStubController()
	defer stub.Close()
	for _, served := range []bool{false, true} {
		d, err := e.execReady(ctx, stub, bin, served)
		if err != nil {
			t.Fatalf("served=%v: %v", served, err)
		}
		if d <= 0 {
			t.Fatalf("served=%v: measured %v", served, d)
		}
	}
}
