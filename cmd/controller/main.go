// Command controller runs the interview control plane: the public API for
// frontends, the internal API for session VMs, the interview lifecycle on a
// machine provider, and Prometheus metrics. Subcommands: serve (default),
// migrate, token, and the operator's sessions and machines. `controller
// --help` lists every setting. The program itself is pkg/controller's Main;
// this command only wires the process's arguments, environment and signals
// to it.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/interviewvm/controlplane/pkg/controller"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := controller.Main(ctx, os.Args[1:], os.Getenv, os.Stdout, os.Stderr)
	stop()
	if errors.Is(err, flag.ErrHelp) {
		return
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "controller:", err)
		os.Exit(1)
	}
}
