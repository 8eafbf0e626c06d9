package flymachinestest

import "context"

// Runner backs the fake's machines with something real, typically one
// process per machine listening on the machine's PrivateIP. The fake calls
// it outside its lock, from goroutines it owns:
//
//   - Start when a machine has booted (create without skip_launch, or a
//     start, then the boot delay: the image pull and VM boot of a real
//     machine). The machine becomes "started" once Start has returned nil,
//     as on Fly, where "started" means the main process was launched. An
//     error fails the boot: the machine stops, and is destroyed if it has
//     auto_destroy.
//   - Stop when a machine that Start booted is stopped or destroyed, and
//     for every such machine when the server closes. Stop should end the
//     process and return once it is gone; it may be called for a process
//     that has already exited.
//
// The machine's main process exiting on its own is reported by calling
// RunMachine.Exited: the fake then applies the restart policy, stops the
// machine and, with auto_destroy, destroys it — as Fly does.
//
// Start gets a context that ends when the server closes or the machine is
// stopped or destroyed during the boot; Stop's ends a few seconds after the
// server closes, so processes are still stopped on Close. A Runner
// that also has a Close method (as ProcessRunner does) is closed by
// Server.Close, after every machine's Stop.
type Runner interface {
	Start(ctx context.Context, m RunMachine) error
	Stop(ctx context.Context, m RunMachine) error
}

// RunMachine is what a Runner knows about one boot of a machine.
type RunMachine struct {
	App  string
	ID   string
	Name string
	// Boot counts the machine's boots: the Start and Stop of one boot carry
	// the same value, so a Runner never stops a later boot by mistake.
	Boot       int
	Region     string
	InstanceID string
	// PrivateIP is the machine's address (127.0.x.y by default): a process
	// should listen there, as a VM listens on its 6PN address.
	PrivateIP string
	Image     string
	// Env is config.env plus the variables Fly sets in every machine:
	// FLY_APP_NAME, FLY_MACHINE_ID, FLY_ALLOC_ID, FLY_REGION,
	// FLY_PRIVATE_IP, FLY_IMAGE_REF, FLY_MACHINE_VERSION.
	Env      map[string]string
	Metadata map[string]string
	// Exited reports that the main process ended with code. Calls after the
	// machine was stopped, destroyed or restarted are ignored.
	Exited func(code int)
}

// NopRunner runs nothing: machines only change state. It is the default.
type NopRunner struct{}

// Start implements Runner.
func (NopRunner) Start(context.Context, RunMachine) error { return nil }

// Stop implements Runner.
func (NopRunner) Stop(context.Context, RunMachine) error { return nil }
