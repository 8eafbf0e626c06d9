// Command sessionvm runs inside the VM of one interview: it wires signals
// to pkg/sessionvm's Run, which reads its settings from the environment
// (SESSION_ID, SESSION_TOKEN, CONTROLLER_URL, …; see pkg/sessionvm) and
// logs JSON lines on stderr. SIGTERM and SIGINT end the interview with
// reason ended_by_user. It exits 1 when the VM cannot go on.
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"

	"github.com/interviewvm/controlplane/pkg/sessionvm"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := sessionvm.Run(ctx, os.Getenv, os.Stderr)
	stop()
	if err != nil {
		// Run has logged the error.
		os.Exit(1)
	}
}
