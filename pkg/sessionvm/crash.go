package sessionvm

import (
	"context"
	"fmt"
	"os"
	"runtime/debug"
	"time"

	"github.com/interviewvm/controlplane/pkg/session"
)

// crashReportTimeout bounds the last report of a crashing VM.
const crashReportTimeout = 5 * time.Second

// recoverCrash, deferred at the top of each goroutine the VM owns, turns a
// panic into a last "ended" report marked failed (so the controller fails
// the session at once instead of waiting for heartbeats to stop), then
// exits non-zero. The transcript acknowledged so far is safe at the
// controller; the rest of the VM's state is not trusted after a panic.
func (v *vm) recoverCrash() {
	p := recover()
	if p == nil {
		return
	}
	v.log.Error("sessionvm panicked", "panic", fmt.Sprint(p), "stack", string(debug.Stack()))
	ctx, cancel := context.WithTimeout(context.Background(), crashReportTimeout)
	defer cancel()
	last := int64(0)
	if v.asm != nil {
		last = v.asm.LastSeq()
	}
	err := v.client.Ended(ctx, session.Ended{Reason: session.ReasonMachineLost, LastSeq: last, Failed: true})
	if err != nil {
		v.log.Error("report crash failed", "error", err)
	}
	exit := v.exit
	if exit == nil {
		exit = os.Exit
	}
	exit(2)
}
