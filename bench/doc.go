// Package bench is the control plane's benchmark harness: it measures start
// latency, burst admission, transcript ingest, live transcript fan-out,
// scale and the local provider, each next to its limit measured in the same
// run, and renders docs/benchmarks.md. `make bench` runs it through
// bench/cmd/benchrun; nothing here runs under `make test`.
//
// The controller under test is the real bin/controller, started as a
// separate process against a fresh database of the private PostgreSQL:
// what is measured is what ships, and its memory and CPU are its own. The
// fake Fly Machines API (flymachinestest), the synthetic session VMs, the
// stand-in controller of the platform floor and the load drivers run in
// the harness process. Only the profiling pass wires the controller
// in-process (InProcess), so that one CPU profile holds its code.
package bench
