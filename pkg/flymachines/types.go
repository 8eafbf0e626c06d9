package flymachines

import (
	"encoding/json"
	"fmt"
	"strings"
	"time"
)

// Machine states as the Machines API reports them.
const (
	StateCreated    = "created"
	StateStarting   = "starting"
	StateStarted    = "started"
	StateStopping   = "stopping"
	StateStopped    = "stopped"
	StateSuspended  = "suspended"
	StateFailed     = "failed"
	StateDestroying = "destroying"
	StateDestroyed  = "destroyed"
)

// Restart policies of MachineRestart.Policy.
const (
	RestartNo        = "no"
	RestartAlways    = "always"
	RestartOnFailure = "on-failure"
)

// Machine is a Fly Machine as the API returns it. Only the fields this
// project reads are decoded; the rest of Fly's answer is ignored.
type Machine struct {
	ID         string         `json:"id"`
	Name       string         `json:"name"`
	State      string         `json:"state"`
	Region     string         `json:"region"`
	InstanceID string         `json:"instance_id,omitempty"`
	Version    string         `json:"version,omitempty"`
	PrivateIP  string         `json:"private_ip,omitempty"`
	Config     *MachineConfig `json:"config,omitempty"`
	ImageRef   *ImageRef      `json:"image_ref,omitempty"`
	// CreatedAt and UpdatedAt are kept as Fly sends them (RFC 3339 text).
	CreatedAt  string         `json:"created_at,omitempty"`
	UpdatedAt  string         `json:"updated_at,omitempty"`
	Events     []MachineEvent `json:"events,omitempty"`
	Checks     []CheckStatus  `json:"checks,omitempty"`
	HostStatus string         `json:"host_status,omitempty"`
	Nonce      string         `json:"nonce,omitempty"`
}

// Metadata returns the machine's metadata (config.metadata), or nil.
func (m *Machine) Metadata() map[string]string {
	if m == nil || m.Config == nil {
		return nil
	}
	return m.Config.Metadata
}

// Gone reports whether the machine is destroyed or being destroyed.
func (m *Machine) Gone() bool {
	return m.State == StateDestroyed || m.State == StateDestroying
}

// MachineSummary is a machine as the summary form of the list
// (summary=true) returns it: Fly leaves out config (so metadata and env),
// checks, events, host_status and nonce. Only the fields this project
// reads are decoded.
type MachineSummary struct {
	ID         string `json:"id"`
	Name       string `json:"name"`
	State      string `json:"state"`
	Region     string `json:"region"`
	InstanceID string `json:"instance_id,omitempty"`
	PrivateIP  string `json:"private_ip,omitempty"`
	// CreatedAt is kept as Fly sends it (RFC 3339 text).
	CreatedAt string `json:"created_at,omitempty"`
}

// Gone reports whether the machine is destroyed or being destroyed.
func (m *MachineSummary) Gone() bool {
	return m.State == StateDestroyed || m.State == StateDestroying
}

// ImageRef describes the image a machine runs.
type ImageRef struct {
	Registry   string            `json:"registry,omitempty"`
	Repository string            `json:"repository,omitempty"`
	Tag        string            `json:"tag,omitempty"`
	Digest     string            `json:"digest,omitempty"`
	Labels     map[string]string `json:"labels,omitempty"`
}

// MachineEvent is one entry of a machine's event log (newest first).
type MachineEvent struct {
	ID     string `json:"id,omitempty"`
	Type   string `json:"type"`
	Status string `json:"status"`
	Source string `json:"source,omitempty"`
	// Timestamp is in Unix milliseconds.
	Timestamp int64 `json:"timestamp"`
}

// CheckStatus is the result of one health check.
type CheckStatus struct {
	Name      string `json:"name"`
	Status    string `json:"status"`
	Output    string `json:"output,omitempty"`
	UpdatedAt string `json:"updated_at,omitempty"`
}

// MachineConfig is the subset of Fly's machine config this project sets.
type MachineConfig struct {
	Image       string            `json:"image"`
	Env         map[string]string `json:"env,omitempty"`
	Guest       *Guest            `json:"guest,omitempty"`
	Metadata    map[string]string `json:"metadata,omitempty"`
	Services    []Service         `json:"services,omitempty"`
	AutoDestroy bool              `json:"auto_destroy,omitempty"`
	Restart     *Restart          `json:"restart,omitempty"`
	StopConfig  *StopConfig       `json:"stop_config,omitempty"`
}

// Guest is the machine size.
type Guest struct {
	CPUKind  string `json:"cpu_kind,omitempty"` // "shared" or "performance"
	CPUs     int    `json:"cpus,omitempty"`
	MemoryMB int    `json:"memory_mb,omitempty"` // a multiple of 256
}

// Restart is the machine's restart policy.
type Restart struct {
	Policy     string `json:"policy"`
	MaxRetries int    `json:"max_retries,omitempty"`
}

// StopConfig is how Fly stops the machine's main process.
type StopConfig struct {
	Signal  string   `json:"signal,omitempty"`
	Timeout Duration `json:"timeout,omitempty"`
}

// Service exposes a port of the machine through Fly's proxy.
type Service struct {
	Protocol     string    `json:"protocol"`
	InternalPort int       `json:"internal_port"`
	Ports        []Port    `json:"ports,omitempty"`
	Autostart    *bool     `json:"autostart,omitempty"`
	Autostop     *Autostop `json:"autostop,omitempty"`
}

// Port is a public port of a Service.
type Port struct {
	Port       int      `json:"port,omitempty"`
	Handlers   []string `json:"handlers,omitempty"`
	ForceHTTPS bool     `json:"force_https,omitempty"`
}

// Autostop is what Fly's proxy does with an idle machine: "off", "stop" or
// "suspend". Fly's API takes false/true/"suspend" and answers with booleans
// for off and stop, so Autostop marshals that way and reads both forms.
type Autostop string

// Autostop values.
const (
	AutostopOff     Autostop = "off"
	AutostopStop    Autostop = "stop"
	AutostopSuspend Autostop = "suspend"
)

// MarshalJSON implements json.Marshaler.
func (a Autostop) MarshalJSON() ([]byte, error) {
	switch a {
	case AutostopOff, "":
		return []byte("false"), nil
	case AutostopStop:
		return []byte("true"), nil
	default:
		return json.Marshal(string(a))
	}
}

// UnmarshalJSON implements json.Unmarshaler.
func (a *Autostop) UnmarshalJSON(b []byte) error {
	var v any
	if err := json.Unmarshal(b, &v); err != nil {
		return err
	}
	switch v := v.(type) {
	case bool:
		*a = AutostopOff
		if v {
			*a = AutostopStop
		}
	case string:
		*a = Autostop(v)
	case nil:
		*a = ""
	default:
		return fmt.Errorf("autostop: unexpected %s", b)
	}
	return nil
}

// Duration is a time.Duration written as Go duration text ("10s"), as Fly
// expects; it reads text or a number of nanoseconds.
type Duration time.Duration

// MarshalJSON implements json.Marshaler.
func (d Duration) MarshalJSON() ([]byte, error) {
	return json.Marshal(time.Duration(d).String())
}

// UnmarshalJSON implements json.Unmarshaler.
func (d *Duration) UnmarshalJSON(b []byte) error {
	if s := strings.TrimSpace(string(b)); s == "null" {
		return nil
	}
	var v any
	if err := json.Unmarshal(b, &v); err != nil {
		return err
	}
	switch v := v.(type) {
	case string:
		p, err := time.ParseDuration(v)
		if err != nil {
			return fmt.Errorf("duration %q: %w", v, err)
		}
		*d = Duration(p)
	case float64:
		*d = Duration(int64(v))
	default:
		return fmt.Errorf("duration: unexpected %s", b)
	}
	return nil
}

// CreateRequest is the body of POST /v1/apps/{app}/machines, plus the
// client-side settings that make a create safe to resolve after its answer
// was lost.
type CreateRequest struct {
	// Name must be unique within the app; leave it empty to let Fly pick one
	// (then a lost answer can only be recovered through RecoverKey).
	Name string `json:"name,omitempty"`
	// Region is a region code or a comma-separated preference list
	// ("iad,ewr,us").
	Region     string        `json:"region,omitempty"`
	Config     MachineConfig `json:"config"`
	SkipLaunch bool          `json:"skip_launch,omitempty"`
	// SkipServiceRegistration creates the machine cordoned.
	SkipServiceRegistration bool `json:"skip_service_registration,omitempty"`
	// LeaseTTL, in seconds, makes Fly return a lease nonce with the machine.
	LeaseTTL int `json:"lease_ttl,omitempty"`

	// RecoverKey names a key of Config.Metadata whose value identifies this
	// machine (for sessions: interview_session_id). When a create times
	// out, loses its connection or gets a 5xx, the client lists the app's
	// machines filtered by metadata.<RecoverKey>=<value> (and by Name, when
	// set) and returns the machine it finds instead of creating another.
	RecoverKey string `json:"-"`
	// Background marks a create nobody waits for (a pre-warm): in the
	// client's rate limiter it waits behind every other create of the app
	// and never takes a slot one of them could use.
	Background bool `json:"-"`
}

// ListOptions filters List.
type ListOptions struct {
	// Metadata keeps machines whose metadata has every key=value given
	// (sent as metadata.<key>=<value>).
	Metadata map[string]string
	// Region keeps machines of one region.
	Region string
	// States keeps machines in these states (created, started, stopped,
	// suspended).
	States []string
	// IncludeDeleted also returns destroyed machines.
	IncludeDeleted bool
	// Summary asks Fly to omit config (metadata included), checks,
	// events, host_status and nonce; ListSummaries always sets it.
	Summary bool
}

// WaitOptions shapes Wait.
type WaitOptions struct {
	// State to wait for: started (default), stopped, suspended, destroyed.
	State string
	// InstanceID is the machine version being waited on; Fly requires it
	// when waiting for stopped.
	InstanceID string
	// PerCall is the timeout sent with each wait request, at most (and by
	// default) 60 s: Fly rejects longer ones. Wait keeps calling until the
	// state is reached or ctx ends.
	PerCall time.Duration
}

// StopRequest is the optional body of a stop.
type StopRequest struct {
	Signal  string   `json:"signal,omitempty"`
	Timeout Duration `json:"timeout,omitempty"`
}

// errorBody is Fly's error answer: {"error": "...", "status": "..."}.
type errorBody struct {
	Error   string `json:"error"`
	Message string `json:"message"`
	Status  string `json:"status"`
}
