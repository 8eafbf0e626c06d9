// Command sessionvm runs inside the VM of one interview (DESIGN §2). It
// reads its session id, token and the controller's URL from the
// environment, fetches the rest of its configuration from the controller's
// internal API, serves its HTTP endpoints, reports ready, heartbeats,
// enforces its own deadline and, when the interview ends, reports ended and
// exits.
//
// Environment:
//
//	SESSION_ID, SESSION_TOKEN, CONTROLLER_URL  required
//	LISTEN_FD       an inherited listening socket (fd number; local provider)
//	LISTEN_ADDR     else listen here
//	SESSION_PORT    else listen on :SESSION_PORT (default 8080)
//	FLY_MACHINE_ID  reported in the ready callback when set
//
// It ends the interview when the controller answers a heartbeat with
// "end", when its deadline passes (max_duration), or on SIGTERM/SIGINT
// (ended_by_user); it exits without reporting when the controller says the
// session is no longer live (409). Logs are JSON lines on stderr, each with
// session_id; the token is never logged.
//
// This first form brokers no WebRTC yet: the realtime broker will register
// its routes on the VM's mux, request the end through vm.requestEnd (call
// hung up, idle timeout) and provide the transcript's last seq.
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Getenv, os.Stderr)
	stop()
	if err != nil {
		// run has logged the error.
		os.Exit(1)
	}
}
