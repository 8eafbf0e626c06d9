package flymachinestest

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"
)

// Machine states.
const (
	stateCreated    = "created"
	stateStarting   = "starting"
	stateStarted    = "started"
	stateStopping   = "stopping"
	stateStopped    = "stopped"
	stateSuspended  = "suspended"
	stateDestroying = "destroying"
	stateDestroyed  = "destroyed"
)

const maxWait = 60 * time.Second

type app struct {
	name     string
	machines map[string]*machine
	order    []*machine
	names    map[string]*machine // live machines by name
}

type machine struct {
	app        string
	id         string
	name       string
	state      string
	region     string
	instanceID string
	privateIP  string
	config     map[string]any
	createdAt  time.Time
	updatedAt  time.Time
	events     []event // newest first
	changed    chan struct{}
	// gen counts boots and halts; background work for an older gen is void.
	gen        int
	bootCancel context.CancelFunc
	proc       *RunMachine // set while the Runner has a process for it
	restarts   int
}

type event struct {
	Type      string `json:"type"`
	Status    string `json:"status"`
	Source    string `json:"source"`
	Timestamp int64  `json:"timestamp"`
}

// Machine is a snapshot of one of the fake's machines.
type Machine struct {
	App           string
	ID            string
	Name          string
	State         string
	Region        string
	InstanceID    string
	PrivateIP     string
	Image         string
	Env           map[string]string
	Metadata      map[string]string
	AutoDestroy   bool
	RestartPolicy string
	// Config is the machine's config as the API returns it.
	Config    json.RawMessage
	CreatedAt time.Time
}

// Machines returns the app's machines, destroyed ones included, oldest
// first.
func (s *Server) Machines(appName string) []Machine {
	s.mu.Lock()
	defer s.mu.Unlock()
	a := s.apps[appName]
	if a == nil {
		return nil
	}
	out := make([]Machine, 0, len(a.order))
	for _, m := range a.order {
		out = append(out, m.snapshot())
	}
	return out
}

// LiveMachines returns the app's machines that are not destroyed or being
// destroyed, oldest first.
func (s *Server) LiveMachines(appName string) []Machine {
	var out []Machine
	for _, m := range s.Machines(appName) {
		if m.State != stateDestroyed && m.State != stateDestroying {
			out = append(out, m)
		}
	}
	return out
}

// Machine returns one machine.
func (s *Server) Machine(appName, id string) (Machine, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	m := s.lookupLocked(appName, id)
	if m == nil {
		return Machine{}, false
	}
	return m.snapshot(), true
}

// Exit reports that a machine's main process ended with code, as a Runner
// would: the restart policy applies, then auto_destroy.
func (s *Server) Exit(appName, id string, code int) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	m := s.lookupLocked(appName, id)
	if m == nil {
		return fmt.Errorf("machine %s not found", id)
	}
	if m.state != stateStarting && m.state != stateStarted {
		return fmt.Errorf("machine %s is %s", id, m.state)
	}
	s.exitLocked(m, m.gen, code)
	return nil
}

func (m *machine) snapshot() Machine {
	cfg, _ := json.Marshal(m.config)
	return Machine{
		App: m.app, ID: m.id, Name: m.name, State: m.state, Region: m.region,
		InstanceID: m.instanceID, PrivateIP: m.privateIP, Image: m.image(),
		Env: m.stringMap("env"), Metadata: m.stringMap("metadata"),
		AutoDestroy: m.autoDestroy(), RestartPolicy: m.restartPolicy(),
		Config: cfg, CreatedAt: m.createdAt,
	}
}

func (m *machine) image() string {
	s, _ := m.config["image"].(string)
	return s
}

func (m *machine) stringMap(key string) map[string]string {
	raw, _ := m.config[key].(map[string]any)
	out := make(map[string]string, len(raw))
	for k, v := range raw {
		if s, ok := v.(string); ok {
			out[k] = s
		}
	}
	return out
}

func (m *machine) autoDestroy() bool {
	b, _ := m.config["auto_destroy"].(bool)
	return b
}

func (m *machine) restartPolicy() string {
	r, _ := m.config["restart"].(map[string]any)
	p, _ := r["policy"].(string)
	if p == "" {
		return "on-failure" // Fly's default
	}
	return p
}

func (m *machine) maxRetries() int {
	r, _ := m.config["restart"].(map[string]any)
	if n, ok := r["max_retries"].(json.Number); ok {
		if v, err := n.Int64(); err == nil && v > 0 {
			return int(v)
		}
	}
	return 10
}

func (m *machine) gone() bool { return m.state == stateDestroyed || m.state == stateDestroying }

// machineJSON is a machine as the API returns it.
type machineJSON struct {
	ID         string          `json:"id"`
	Name       string          `json:"name"`
	State      string          `json:"state"`
	Region     string          `json:"region"`
	InstanceID string          `json:"instance_id"`
	Version    string          `json:"version"`
	PrivateIP  string          `json:"private_ip"`
	Config     json.RawMessage `json:"config,omitempty"`
	ImageRef   *imageRef       `json:"image_ref,omitempty"`
	CreatedAt  string          `json:"created_at"`
	UpdatedAt  string          `json:"updated_at"`
	Events     []event         `json:"events,omitempty"`
	HostStatus string          `json:"host_status"`
}

// summaryJSON is a machine as the summary form of the list returns it:
// Fly's machine without config, checks, events, host_status and nonce.
type summaryJSON struct {
	ID         string    `json:"id"`
	Name       string    `json:"name"`
	State      string    `json:"state"`
	Region     string    `json:"region"`
	InstanceID string    `json:"instance_id"`
	PrivateIP  string    `json:"private_ip"`
	ImageRef   *imageRef `json:"image_ref,omitempty"`
	CreatedAt  string    `json:"created_at"`
	UpdatedAt  string    `json:"updated_at"`
}

type imageRef struct {
	Registry   string            `json:"registry"`
	Repository string            `json:"repository"`
	Tag        string            `json:"tag"`
	Digest     string            `json:"digest"`
	Labels     map[string]string `json:"labels"`
}

func (m *machine) render() machineJSON {
	j := machineJSON{
		ID: m.id, Name: m.name, State: m.state, Region: m.region,
		InstanceID: m.instanceID, Version: m.instanceID, PrivateIP: m.privateIP,
		CreatedAt:  m.createdAt.UTC().Format(time.RFC3339),
		UpdatedAt:  m.updatedAt.UTC().Format(time.RFC3339),
		HostStatus: "ok",
		Events:     slices.Clone(m.events),
	}
	ref := parseImage(m.image())
	j.ImageRef = &ref
	j.Config, _ = json.Marshal(m.config)
	return j
}

func (m *machine) renderSummary() summaryJSON {
	ref := parseImage(m.image())
	return summaryJSON{
		ID: m.id, Name: m.name, State: m.state, Region: m.region,
		InstanceID: m.instanceID, PrivateIP: m.privateIP, ImageRef: &ref,
		CreatedAt: m.createdAt.UTC().Format(time.RFC3339),
		UpdatedAt: m.updatedAt.UTC().Format(time.RFC3339),
	}
}

// parseImage splits registry/repository:tag@digest.
func parseImage(img string) imageRef {
	ref := imageRef{Registry: "docker-hub-mirror.fly.io", Tag: "latest", Labels: map[string]string{}}
	if at := strings.Index(img, "@"); at >= 0 {
		ref.Digest, img = img[at+1:], img[:at]
	}
	if slash := strings.Index(img, "/"); slash >= 0 && strings.ContainsAny(img[:slash], ".:") {
		ref.Registry, img = img[:slash], img[slash+1:]
	}
	if colon := strings.LastIndex(img, ":"); colon >= 0 {
		ref.Tag, img = img[colon+1:], img[:colon]
	}
	ref.Repository = img
	return ref
}

func (s *Server) app(name string) *app {
	a := s.apps[name]
	if a == nil {
		a = &app{name: name, machines: map[string]*machine{}, names: map[string]*machine{}}
		s.apps[name] = a
	}
	return a
}

func (s *Server) lookupLocked(appName, id string) *machine {
	a := s.apps[appName]
	if a == nil {
		return nil
	}
	return a.machines[id]
}

func notFound() reply {
	return reply{status: http.StatusNotFound, body: errBody("machine not found", "")}
}

func okTrue() reply {
	return reply{status: http.StatusOK, body: map[string]bool{"ok": true}}
}

func badRequest(msg string) reply {
	return reply{status: http.StatusBadRequest, body: errBody(msg, "")}
}

// createBody lists the create fields Fly accepts; others are rejected.
type createBody struct {
	Name                    string          `json:"name"`
	Region                  string          `json:"region"`
	Config                  json.RawMessage `json:"config"`
	SkipLaunch              bool            `json:"skip_launch"`
	SkipServiceRegistration bool            `json:"skip_service_registration"`
	LeaseTTL                int             `json:"lease_ttl"`
	LSVD                    bool            `json:"lsvd"`
	SkipSecrets             bool            `json:"skip_secrets"`
	MinSecretsVersion       *uint64         `json:"min_secrets_version"`
}

// configField reports whether k is a machine config key of Fly's API.
func configField(k string) bool {
	switch k {
	case "image", "env", "guest", "metadata", "services", "auto_destroy", "restart",
		"stop_config", "init", "checks", "dns", "files", "processes", "mounts",
		"schedule", "metrics", "statics", "standbys", "size", "disable_machine_autostart",
		"containers", "volumes", "rootfs", "cache_drive", "spot":
		return true
	}
	return false
}

// validName reports whether name is at most 63 lowercase letters, digits
// and dashes, not starting or ending with a dash.
func validName(name string) bool {
	if name == "" || len(name) > 63 || name[0] == '-' || name[len(name)-1] == '-' {
		return false
	}
	for _, r := range name {
		if (r < 'a' || r > 'z') && (r < '0' || r > '9') && r != '-' {
			return false
		}
	}
	return true
}

func (s *Server) handleCreate(r *http.Request, body []byte, appName, _ string) reply {
	if s.createDelay > 0 {
		// Placement and the image pull: the cost a pre-warm pays ahead.
		select {
		case <-time.After(s.createDelay):
		case <-r.Context().Done():
		case <-s.ctx.Done():
		}
	}
	var in createBody
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&in); err != nil {
		return badRequest("invalid request body: " + err.Error())
	}
	if len(in.Config) == 0 || string(in.Config) == "null" {
		return badRequest("config is required")
	}
	cfg, msg := parseConfig(in.Config)
	if msg != "" {
		return badRequest("invalid config: " + msg)
	}
	if in.Name != "" && !validName(in.Name) {
		return badRequest("invalid name: use at most 63 lowercase letters, digits and dashes")
	}

	s.mu.Lock()
	defer s.mu.Unlock()
	a := s.app(appName)
	name := in.Name
	if name == "" {
		name = generatedName()
	}
	if a.names[name] != nil {
		return reply{status: http.StatusConflict, body: errBody(
			fmt.Sprintf("a machine named %q already exists in app %s: name already taken", name, appName), "name_taken")}
	}
	ip, ok := s.allocIPLocked()
	if !ok {
		return reply{status: http.StatusPreconditionFailed, body: errBody("no private addresses left", "insufficient_capacity")}
	}
	now := time.Now()
	m := &machine{
		app: appName, id: randHex(14), name: name, state: stateCreated,
		region: s.pickRegion(in.Region), instanceID: newULID(), privateIP: ip,
		config: cfg, createdAt: now, updatedAt: now, changed: make(chan struct{}),
	}
	m.events = []event{{Type: "launch", Status: stateCreated, Source: "user", Timestamp: now.UnixMilli()}}
	a.machines[m.id] = m
	a.order = append(a.order, m)
	a.names[name] = m
	rep := reply{status: http.StatusOK, body: m.render()}
	if !in.SkipLaunch {
		s.startLocked(m)
	}
	return rep
}

// parseConfig decodes and checks a machine config.
func parseConfig(raw json.RawMessage) (map[string]any, string) {
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	var cfg map[string]any
	if err := dec.Decode(&cfg); err != nil {
		return nil, err.Error()
	}
	for k := range cfg {
		if !configField(k) {
			return nil, fmt.Sprintf("unknown field %q", k)
		}
	}
	if img, _ := cfg["image"].(string); img == "" {
		return nil, "image is required"
	}
	for _, k := range []string{"env", "metadata"} {
		v, ok := cfg[k]
		if !ok || v == nil {
			continue
		}
		mm, ok := v.(map[string]any)
		if !ok {
			return nil, k + " must be an object of strings"
		}
		for kk, vv := range mm {
			if _, ok := vv.(string); !ok {
				return nil, fmt.Sprintf("%s.%s must be a string", k, kk)
			}
		}
	}
	if g, ok := cfg["guest"].(map[string]any); ok {
		if kind, ok := g["cpu_kind"].(string); ok && kind != "shared" && kind != "performance" {
			return nil, "guest.cpu_kind must be shared or performance"
		}
		if mem, ok := g["memory_mb"].(json.Number); ok {
			if v, err := mem.Int64(); err != nil || v <= 0 || v%256 != 0 {
				return nil, "guest.memory_mb must be a positive multiple of 256"
			}
		}
	}
	if r, ok := cfg["restart"].(map[string]any); ok {
		switch p, _ := r["policy"].(string); p {
		case "", "no", "always", "on-failure", "spot-price":
		default:
			return nil, fmt.Sprintf("restart.policy %q is not one of no, always, on-failure", p)
		}
	}
	if v, ok := cfg["auto_destroy"]; ok {
		if _, isBool := v.(bool); !isBool {
			return nil, "auto_destroy must be a boolean"
		}
	}
	return cfg, ""
}

func (s *Server) pickRegion(want string) string {
	for _, r := range strings.Split(want, ",") {
		r = strings.TrimSpace(r)
		if len(r) == 3 && r != "any" {
			return r
		}
	}
	return s.region
}

func (s *Server) allocIPLocked() (string, bool) {
	for {
		a := s.nextIP
		if !a.IsValid() || (a.Is4() && a.As4()[0] != 127) {
			return "", false
		}
		s.nextIP = a.Next()
		if a.Is4() {
			b := a.As4()
			if b[3] == 0 || b[3] == 255 {
				continue
			}
		}
		return a.String(), true
	}
}

// generatedName makes a Fly-style name for a machine created without one.
func generatedName() string {
	adjectives := [16]string{"aged", "billowing", "crimson", "damp", "empty", "frosty", "gentle", "hidden", "icy", "jolly", "lingering", "misty", "quiet", "rough", "silent", "wild"}
	nouns := [16]string{"brook", "cloud", "dawn", "field", "forest", "glade", "hill", "lake", "meadow", "night", "pond", "river", "sea", "snow", "thunder", "wave"}
	b := []byte(randHex(8))
	n, _ := strconv.ParseUint(string(b), 16, 64)
	return fmt.Sprintf("%s-%s-%04d", adjectives[n%16], nouns[(n/16)%16], (n/256)%10000)
}

func (s *Server) handleGet(_ *http.Request, _ []byte, appName, id string) reply {
	s.mu.Lock()
	defer s.mu.Unlock()
	m := s.lookupLocked(appName, id)
	if m == nil {
		return notFound()
	}
	return reply{status: http.StatusOK, body: m.render()}
}

func (s *Server) handleList(r *http.Request, _ []byte, appName, _ string) reply {
	q := r.URL.Query()
	includeDeleted, _ := strconv.ParseBool(q.Get("include_deleted"))
	summary, _ := strconv.ParseBool(q.Get("summary"))
	region := q.Get("region")
	var states []string
	for _, v := range q["state"] {
		for _, st := range strings.Split(v, ",") {
			if st = strings.TrimSpace(st); st != "" {
				states = append(states, st)
			}
		}
	}
	meta := map[string]string{}
	for k, v := range q {
		if key, ok := strings.CutPrefix(k, "metadata."); ok && len(v) > 0 {
			meta[key] = v[0]
		}
	}

	s.mu.Lock()
	defer s.mu.Unlock()
	full, sums := []machineJSON{}, []summaryJSON{}
	if a := s.apps[appName]; a != nil {
		now := time.Now()
		for _, m := range a.order {
			switch {
			case !includeDeleted && m.gone():
			case region != "" && m.region != region:
			case len(states) > 0 && !slices.Contains(states, m.state):
			case s.listLag > 0 && now.Sub(m.createdAt) < s.listLag:
			case !matchMeta(m.config["metadata"], meta):
			case summary:
				sums = append(sums, m.renderSummary())
			default:
				full = append(full, m.render())
			}
		}
	}
	if summary {
		return reply{status: http.StatusOK, body: sums}
	}
	return reply{status: http.StatusOK, body: full}
}

// matchMeta reports whether the config's metadata (a JSON object) has
// every key=value of want.
func matchMeta(have any, want map[string]string) bool {
	md, _ := have.(map[string]any)
	for k, v := range want {
		if s, _ := md[k].(string); s != v {
			return false
		}
	}
	return true
}

func (s *Server) handleStart(_ *http.Request, _ []byte, appName, id string) reply {
	s.mu.Lock()
	defer s.mu.Unlock()
	m := s.lookupLocked(appName, id)
	if m == nil || m.gone() {
		return notFound()
	}
	prev := m.state
	switch m.state {
	case stateCreated, stateStopped, stateSuspended, "failed":
		s.startLocked(m)
	case stateStarting, stateStarted:
		// Already on its way: nothing to do.
	default:
		return reply{status: http.StatusPreconditionFailed, body: errBody(
			"failed_precondition: unable to start machine from current state: "+m.state, "")}
	}
	return reply{status: http.StatusOK, body: map[string]any{"previous_state": prev, "migrated": false, "new_host": ""}}
}

func (s *Server) handleStop(_ *http.Request, body []byte, appName, id string) reply {
	if len(bytes.TrimSpace(body)) > 0 {
		var in struct {
			Signal  string `json:"signal"`
			Timeout any    `json:"timeout"`
		}
		if err := json.Unmarshal(body, &in); err != nil {
			return badRequest("invalid request body: " + err.Error())
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	m := s.lookupLocked(appName, id)
	if m == nil || m.gone() {
		return notFound()
	}
	if m.state == stateStarting || m.state == stateStarted {
		s.haltLocked(m, stateStopped)
	}
	return okTrue()
}

func (s *Server) handleDestroy(r *http.Request, _ []byte, appName, id string) reply {
	q := r.URL.Query()
	force, _ := strconv.ParseBool(q.Get("force"))
	if kill, _ := strconv.ParseBool(q.Get("kill")); kill {
		force = true
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	m := s.lookupLocked(appName, id)
	if m == nil || m.gone() {
		return notFound()
	}
	switch m.state {
	case stateStarting, stateStarted, stateStopping:
		if !force {
			return reply{status: http.StatusPreconditionFailed, body: errBody(
				"failed_precondition: machine is "+m.state+"; stop it first or destroy with force=true", "")}
		}
	}
	s.haltLocked(m, stateDestroyed)
	return okTrue()
}

func (s *Server) handleWait(r *http.Request, _ []byte, appName, id string) reply {
	q := r.URL.Query()
	var states []string
	for _, v := range q["state"] {
		for _, st := range strings.Split(v, ",") {
			if st = strings.TrimSpace(st); st != "" {
				states = append(states, st)
			}
		}
	}
	if len(states) == 0 {
		states = []string{stateStarted}
	}
	for _, st := range states {
		switch st {
		case stateStarted, stateStopped, stateSuspended, stateDestroyed:
		default:
			return badRequest(fmt.Sprintf("invalid_argument: invalid state %q", st))
		}
	}
	timeout := maxWait
	if v := q.Get("timeout"); v != "" {
		var err error
		if n, aerr := strconv.Atoi(v); aerr == nil {
			timeout = time.Duration(n) * time.Second
		} else if timeout, err = time.ParseDuration(v); err != nil {
			return badRequest(fmt.Sprintf("invalid_argument: invalid timeout %q", v))
		}
	}
	if timeout < time.Second || timeout > maxWait {
		return badRequest(fmt.Sprintf("invalid_argument: timeout %s out of range [1s, 1m0s]", timeout))
	}
	instance := q.Get("instance_id")
	if instance == "" {
		instance = q.Get("version")
	}
	if slices.Contains(states, stateStopped) && instance == "" {
		return badRequest("invalid_argument: instance_id is required when waiting for stopped")
	}

	timer := time.NewTimer(time.Duration(float64(timeout) / s.waitScale))
	defer timer.Stop()
	for {
		s.mu.Lock()
		m := s.lookupLocked(appName, id)
		if m == nil {
			s.mu.Unlock()
			return notFound()
		}
		if instance != "" && instance != m.instanceID {
			s.mu.Unlock()
			return badRequest("invalid_argument: instance_id does not match the machine's current version")
		}
		if slices.Contains(states, m.state) {
			rep := reply{status: http.StatusOK, body: map[string]any{"ok": true, "state": m.state, "version": m.instanceID}}
			s.mu.Unlock()
			return rep
		}
		if m.state == stateDestroyed {
			s.mu.Unlock()
			return badRequest("failed_precondition: machine failed to reach desired state, machine is destroyed")
		}
		ch := m.changed
		s.mu.Unlock()
		select {
		case <-ch:
		case <-timer.C:
			return reply{status: http.StatusRequestTimeout, body: errBody(
				"deadline_exceeded: timeout waiting for machine to be "+strings.Join(states, ","), "")}
		case <-r.Context().Done():
			return reply{status: http.StatusRequestTimeout, body: errBody("request cancelled", "")}
		case <-s.ctx.Done():
			return reply{status: http.StatusServiceUnavailable, body: errBody("server closing", "")}
		}
	}
}

func (s *Server) handleGetMetadata(_ *http.Request, _ []byte, appName, id string) reply {
	s.mu.Lock()
	defer s.mu.Unlock()
	m := s.lookupLocked(appName, id)
	if m == nil || m.gone() {
		return notFound()
	}
	return reply{status: http.StatusOK, body: m.stringMap("metadata")}
}

func (s *Server) handleSetMetadata(r *http.Request, body []byte, appName, id string) reply {
	var in struct {
		Value *string `json:"value"`
	}
	if err := json.Unmarshal(body, &in); err != nil || in.Value == nil {
		return badRequest(`invalid request body: want {"value": "..."}`)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	m := s.lookupLocked(appName, id)
	if m == nil || m.gone() {
		return notFound()
	}
	md, _ := m.config["metadata"].(map[string]any)
	if md == nil {
		md = map[string]any{}
		m.config["metadata"] = md
	}
	md[r.PathValue("key")] = *in.Value
	m.updatedAt = time.Now()
	return reply{status: http.StatusNoContent}
}

func (s *Server) handleDeleteMetadata(r *http.Request, _ []byte, appName, id string) reply {
	s.mu.Lock()
	defer s.mu.Unlock()
	m := s.lookupLocked(appName, id)
	if m == nil || m.gone() {
		return notFound()
	}
	if md, _ := m.config["metadata"].(map[string]any); md != nil {
		delete(md, r.PathValue("key"))
	}
	m.updatedAt = time.Now()
	return reply{status: http.StatusNoContent}
}

// setStateLocked moves m to state, records an event and wakes waiters.
func (s *Server) setStateLocked(m *machine, state, eventType, source string) {
	now := time.Now()
	m.state = state
	m.updatedAt = now
	m.events = append([]event{{Type: eventType, Status: state, Source: source, Timestamp: now.UnixMilli()}}, m.events...)
	close(m.changed)
	m.changed = make(chan struct{})
	if state == stateDestroyed {
		if a := s.apps[m.app]; a != nil && a.names[m.name] == m {
			delete(a.names, m.name)
		}
	}
}

// startLocked begins a boot: starting now, started after the Runner has
// started it and the boot delay has passed.
func (s *Server) startLocked(m *machine) {
	m.gen++
	gen := m.gen
	s.setStateLocked(m, stateStarting, "start", "user")
	if s.closed {
		return
	}
	ctx, cancel := context.WithCancel(s.ctx)
	m.bootCancel = cancel
	rm := s.runMachineLocked(m, gen)
	delay := s.bootDelay
	s.wg.Add(1)
	go s.boot(ctx, cancel, m, gen, rm, delay)
}

func (s *Server) boot(ctx context.Context, cancel context.CancelFunc, m *machine, gen int, rm RunMachine, delay time.Duration) {
	defer s.wg.Done()
	defer cancel()
	// The boot delay stands for the image pull and the VM's boot: the main
	// process runs only after it, as on Fly.
	if delay < 0 {
		<-ctx.Done() // never boots
		return
	}
	t := time.NewTimer(delay)
	defer t.Stop()
	select {
	case <-t.C:
	case <-ctx.Done():
		return
	}
	if err := s.runner.Start(ctx, rm); err != nil {
		s.log.Debug("fake fly runner failed to start machine", "machine_id", m.id, "error", err)
		s.mu.Lock()
		if m.gen == gen && m.state == stateStarting {
			s.exitLocked(m, gen, 1)
		}
		s.mu.Unlock()
		return
	}
	s.mu.Lock()
	if m.gen != gen || s.closed {
		s.mu.Unlock()
		s.stopProc(rm) // stopped or destroyed while booting
		return
	}
	m.proc = &rm
	if m.state == stateStarting {
		s.setStateLocked(m, stateStarted, "start", "flyd")
	}
	s.mu.Unlock()
}

// haltLocked stops (final "stopped") or destroys (final "destroyed") m.
func (s *Server) haltLocked(m *machine, final string) {
	m.gen++
	gen := m.gen
	if m.bootCancel != nil {
		m.bootCancel()
		m.bootCancel = nil
	}
	proc := m.proc
	m.proc = nil
	transient, typ := stateStopping, "stop"
	if final == stateDestroyed {
		transient, typ = stateDestroying, "destroy"
	}
	s.setStateLocked(m, transient, typ, "user")
	if s.closed {
		return
	}
	delay := s.stopDelay
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		if proc != nil {
			s.stopProc(*proc)
		}
		if delay > 0 && !s.pause(context.Background(), delay) {
			return
		}
		s.mu.Lock()
		defer s.mu.Unlock()
		if m.gen != gen {
			return
		}
		if final == stateStopped {
			s.setStateLocked(m, stateStopped, "stop", "flyd")
			if !m.autoDestroy() {
				return
			}
		}
		s.setStateLocked(m, stateDestroyed, "destroy", "flyd")
	}()
}

// exitLocked applies the main process exiting with code during gen.
func (s *Server) exitLocked(m *machine, gen, code int) {
	if m.gen != gen || (m.state != stateStarting && m.state != stateStarted) {
		return
	}
	m.proc = nil
	if m.bootCancel != nil {
		m.bootCancel()
		m.bootCancel = nil
	}
	policy := m.restartPolicy()
	if policy == "always" || (policy == "on-failure" && code != 0 && m.restarts < m.maxRetries()) {
		m.restarts++
		s.setStateLocked(m, stateStopped, "exit", "flyd")
		s.startLocked(m)
		return
	}
	m.gen++
	s.setStateLocked(m, stateStopped, "exit", "flyd")
	if m.autoDestroy() {
		s.setStateLocked(m, stateDestroyed, "destroy", "flyd")
	}
}

func (s *Server) stopProc(p RunMachine) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(s.ctx), 10*time.Second)
	defer cancel()
	if err := s.runner.Stop(ctx, p); err != nil {
		s.log.Debug("fake fly runner failed to stop machine", "machine_id", p.ID, "error", err)
	}
}

func (s *Server) runMachineLocked(m *machine, gen int) RunMachine {
	env := m.stringMap("env")
	img := m.image()
	maps.Copy(env, map[string]string{
		"FLY_APP_NAME":        m.app,
		"FLY_MACHINE_ID":      m.id,
		"FLY_ALLOC_ID":        m.id,
		"FLY_REGION":          m.region,
		"FLY_PRIVATE_IP":      m.privateIP,
		"FLY_IMAGE_REF":       img,
		"FLY_MACHINE_VERSION": m.instanceID,
	})
	return RunMachine{
		App: m.app, ID: m.id, Name: m.name, Boot: gen, Region: m.region, InstanceID: m.instanceID,
		PrivateIP: m.privateIP, Image: img, Env: env, Metadata: m.stringMap("metadata"),
		Exited: func(code int) {
			s.mu.Lock()
			defer s.mu.Unlock()
			s.exitLocked(m, gen, code)
		},
	}
}
