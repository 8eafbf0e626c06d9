// Command floorvm is the platform floor of a session VM's start, built and
// run by the bench: the least a Go program does to be a session VM that has
// reported ready. It takes the listener inherited as file descriptor
// LISTEN_FD, serves GET /healthz on it, and posts a ready report of the
// same size and headers as sessionvm's to CONTROLLER_URL with the session
// token; then it serves until SIGTERM. It reads no configuration, talks to
// no realtime API and links nothing but the standard library, so its
// exec → ready time is what this machine allows a Go program, and the
// difference to sessionvm's is ours.
package main

import (
	"bytes"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strconv"
	"syscall"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "floorvm:", err)
		os.Exit(1)
	}
}

func run() error {
	fd, err := strconv.Atoi(os.Getenv("LISTEN_FD"))
	if err != nil || fd < 3 {
		return fmt.Errorf("LISTEN_FD=%q: want a file descriptor number ≥ 3", os.Getenv("LISTEN_FD"))
	}
	f := os.NewFile(uintptr(fd), "listener")
	ln, err := net.FileListener(f)
	f.Close()
	if err != nil {
		return fmt.Errorf("inherited listener: %w", err)
	}
	id := os.Getenv("SESSION_ID")
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprintf(w, "{\"session_id\":%q,\"status\":\"ok\"}\n", id)
	})
	srv := &http.Server{Handler: mux}
	go srv.Serve(ln) //nolint:errcheck // ends with the process

	// sessionvm's ready body when the machine id is unknown, as here.
	req, err := http.NewRequest(http.MethodPost,
		os.Getenv("CONTROLLER_URL")+"/internal/v1/sessions/"+id+"/ready", bytes.NewReader([]byte("{}")))
	if err != nil {
		return fmt.Errorf("build ready report: %w", err)
	}
	req.Header.Set("Authorization", "Bearer "+os.Getenv("SESSION_TOKEN"))
	req.Header.Set("Accept", "application/json")
	req.Header.Set("User-Agent", "sessionvm")
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return fmt.Errorf("post ready: %w", err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusNoContent {
		return fmt.Errorf("post ready: status %d", resp.StatusCode)
	}

	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM, os.Interrupt)
	<-sig
	return nil
}
