// Package session holds the control plane's domain vocabulary: interview
// states and the transitions allowed between them, end reasons, machine
// naming, the error codes of the API contract, and the wire types exchanged
// between a session VM and the controller. It imports only the standard
// library so every other package, including sessionvm, may depend on it.
package session

import (
	"errors"
	"fmt"
	"strings"
	"time"
)

// State is the lifecycle state of an interview session.
type State string

// The states of docs/architecture.md, "Lifecycle".
const (
	StateScheduled    State = "scheduled"
	StateProvisioning State = "provisioning"
	StateReady        State = "ready"
	StateInProgress   State = "in_progress"
	StateEnding       State = "ending"
	StateCompleted    State = "completed"
	StateFailed       State = "failed"
	StateCancelled    State = "cancelled"
)

// States lists every state in lifecycle order.
var States = []State{
	StateScheduled, StateProvisioning, StateReady, StateInProgress,
	StateEnding, StateCompleted, StateFailed, StateCancelled,
}

// transitions lists, for each non-terminal state, the states it may move to.
// failed and cancelled are reachable from every non-terminal state.
var transitions = map[State][]State{
	StateScheduled:    {StateProvisioning},
	StateProvisioning: {StateReady, StateEnding},
	StateReady:        {StateInProgress, StateEnding},
	StateInProgress:   {StateEnding},
	StateEnding:       {StateCompleted},
}

// Valid reports whether s is one of the known states.
func (s State) Valid() bool {
	for _, k := range States {
		if s == k {
			return true
		}
	}
	return false
}

// Terminal reports whether s never changes again.
func (s State) Terminal() bool {
	return s == StateCompleted || s == StateFailed || s == StateCancelled
}

// Live reports whether a VM may exist for a session in state s and its
// token may write: provisioning, ready, in_progress and ending.
func (s State) Live() bool {
	switch s {
	case StateProvisioning, StateReady, StateInProgress, StateEnding:
		return true
	}
	return false
}

// CanTransition reports whether a session may move from one state to another.
func CanTransition(from, to State) bool {
	if !from.Valid() || !to.Valid() || from.Terminal() {
		return false
	}
	if to == StateFailed || to == StateCancelled {
		return true
	}
	for _, next := range transitions[from] {
		if next == to {
			return true
		}
	}
	return false
}

// CheckTransition returns a conflict error when from → to is not allowed.
func CheckTransition(from, to State) error {
	if CanTransition(from, to) {
		return nil
	}
	return Errorf(ECONFLICT, "interview is %s and cannot become %s", from, to)
}

// EndReason says why an interview ended.
type EndReason string

// The end reasons of docs/architecture.md, "Lifecycle".
const (
	ReasonCompleted        EndReason = "completed"
	ReasonEndedByUser      EndReason = "ended_by_user"
	ReasonMaxDuration      EndReason = "max_duration"
	ReasonIdleTimeout      EndReason = "idle_timeout"
	ReasonCancelled        EndReason = "cancelled"
	ReasonProvisionFailed  EndReason = "provision_failed"
	ReasonMachineLost      EndReason = "machine_lost"
	ReasonHeartbeatTimeout EndReason = "heartbeat_timeout"
)

// EndReasons lists every end reason.
var EndReasons = []EndReason{
	ReasonCompleted, ReasonEndedByUser, ReasonMaxDuration, ReasonIdleTimeout,
	ReasonCancelled, ReasonProvisionFailed, ReasonMachineLost, ReasonHeartbeatTimeout,
}

// Valid reports whether r is one of the known end reasons.
func (r EndReason) Valid() bool {
	for _, k := range EndReasons {
		if r == k {
			return true
		}
	}
	return false
}

// Architecture names how an interview is brokered. Only "hybrid" exists
// today: the VM brokers SDP and collects the transcript server-side while
// media flows between the browser and the interviewer directly.
const ArchitectureHybrid = "hybrid"

// Architectures lists the accepted architecture values.
var Architectures = []string{ArchitectureHybrid}

// MachineName returns the deterministic machine name of a session:
// interview-<arch>-<tenant8>-<session12>, where tenant8 and session12 are
// the first 8 and 12 hex digits of the UUIDs without dashes. IDs must be
// UUID strings (any case).
func MachineName(arch, tenantID, sessionID string) string {
	hex := func(id string, n int) string {
		h := strings.ToLower(strings.ReplaceAll(id, "-", ""))
		if len(h) > n {
			h = h[:n]
		}
		return h
	}
	return fmt.Sprintf("interview-%s-%s-%s", strings.ToLower(arch), hex(tenantID, 8), hex(sessionID, 12))
}

// Machine is what a provider reports about one session VM.
type Machine struct {
	ID       string `json:"id"`
	Name     string `json:"name"`
	Region   string `json:"region,omitempty"`
	State    string `json:"state"`
	Provider string `json:"provider,omitempty"`
	// Addr is host:port where the controller reaches the VM's HTTP server.
	Addr string `json:"-"`
	// SessionID comes from the machine's metadata.
	SessionID string `json:"-"`
}

// Machine states as the providers report them (Fly's vocabulary).
const (
	MachineCreated   = "created"
	MachineStarting  = "starting"
	MachineStarted   = "started"
	MachineStopping  = "stopping"
	MachineStopped   = "stopped"
	MachineDestroyed = "destroyed"
)

// MachineSpec is what the lifecycle asks a provider to create.
type MachineSpec struct {
	Name      string
	SessionID string
	TenantID  string
	Arch      string
	Region    string
	// Env is the VM's whole environment from the control plane: its session
	// id, its token, the controller URL and, when its interview has
	// started, its secret-free configuration (EnvSessionConfig).
	Env map[string]string
	// Metadata is attached to the machine for lookup by the reconciler.
	Metadata map[string]string
	// SkipLaunch creates the machine without starting it.
	SkipLaunch bool
	// Background marks a create nobody waits for (a pre-warm): under rate
	// limits it yields to every other create.
	Background bool
}

// Environment variable names a session VM reads at boot.
const (
	EnvSessionID     = "SESSION_ID"
	EnvSessionToken  = "SESSION_TOKEN"
	EnvControllerURL = "CONTROLLER_URL"
	EnvListenAddr    = "LISTEN_ADDR"
	EnvSessionPort   = "SESSION_PORT"
	// EnvListenFD names an inherited, already-bound listening socket (file
	// descriptor number) that the local provider hands its VMs.
	EnvListenFD = "LISTEN_FD"
	// EnvSessionConfig carries the VM's configuration (VMConfig as JSON)
	// with the machine, so the VM need not fetch it before it reports
	// ready. It holds no secret (the session token is the VM's only one)
	// and is absent from a machine created before its interview started
	// (a pre-warmed one), whose VM fetches its configuration at boot.
	EnvSessionConfig = "SESSION_CONFIG"
)

// Metadata keys set on every session machine.
const (
	MetaSessionID = "interview_session_id"
	MetaTenantID  = "tenant_id"
	MetaArch      = "arch"
	MetaManagedBy = "managed_by"
	// ManagedByValue marks machines this control plane owns.
	ManagedByValue = "interview-controlplane"
)

// Event is one row of an interview's lifecycle timeline.
type Event struct {
	At     time.Time `json:"at"`
	From   State     `json:"from"`
	To     State     `json:"to"`
	Reason string    `json:"reason,omitempty"`
	Actor  string    `json:"actor"`
}

// EventMachinePrewarmed is the reason of the timeline event that records a
// pre-warmed machine (the status does not change: from and to are equal).
const EventMachinePrewarmed = "machine_prewarmed"

// EventWarmStart is the reason of a start's event (scheduled →
// provisioning) when the start boots the interview's pre-warmed machine
// instead of creating one. A cold start's event has no reason.
const EventWarmStart = "warm_start"

// Actors recorded on events.
const (
	ActorUser       = "user"
	ActorController = "controller"
	ActorVM         = "vm"
	ActorReconciler = "reconciler"
)

// ErrMachineNotFound is wrapped by providers when a machine does not exist
// (never created, or already destroyed and forgotten).
var ErrMachineNotFound = errors.New("machine not found")
