// Package flymachinestest is an in-memory fake of the Fly.io Machines API
// on a real HTTP server (httptest), for testing the flymachines client and
// everything built on it without Fly.
//
// It follows the reference behaviour closely: paths under
// /v1/apps/{app}/machines, Fly's JSON shapes and error bodies
// ({"error": "...", "status": "..."}), the states created → starting →
// started → stopping → stopped → destroyed, skip_launch, auto_destroy with
// the restart policy, the wait endpoint (timeout at most 60 s, 408 when the
// state is not reached, instance_id required to wait for stopped), machine
// names unique within an app (409 name_taken), metadata filters on list,
// the metadata endpoints, the fly-request-id header and an affinity
// cookie, and bearer/FlyV1 authentication (401 when a configured token
// does not match).
//
// Tests steer it with options (boot delay, Fly's rate limits answered with
// 429, a lag before new machines show in lists, a wait timeout that passes
// faster than real time, a Runner that backs machines with real processes —
// ProcessRunner runs one process per machine on the machine's private IP)
// and with FailNext, which injects faults
// into the next calls of an operation: error statuses with Retry-After,
// capacity errors, latency, and answers lost after the work was done —
// the case a client must resolve without creating a second machine. Every
// call is recorded for assertions.
//
// Deliberate differences from Fly, each documented where it applies:
// unknown fields in a create body are rejected (a typo in a client must
// fail a test, not pass silently); destroyed machines stay visible to GET
// (state "destroyed") and to list with include_deleted, while any other
// call on them answers 404; an API stop of an auto_destroy machine
// destroys it.
package flymachinestest

import (
	"context"
	"crypto/rand"
	"crypto/subtle"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"sync"
	"time"

	"golang.org/x/time/rate"
)

// Op names an API operation, for faults and call records.
type Op string

// Operations of the fake.
const (
	OpCreate         Op = "create"
	OpGet            Op = "get"
	OpList           Op = "list"
	OpWait           Op = "wait"
	OpStart          Op = "start"
	OpStop           Op = "stop"
	OpDestroy        Op = "destroy"
	OpGetMetadata    Op = "get_metadata"
	OpSetMetadata    Op = "set_metadata"
	OpDeleteMetadata Op = "delete_metadata"
)

// Limit is a rate limit: Rate requests per second, Burst at once.
type Limit struct {
	Rate  float64
	Burst int
}

// FlyLimits returns Fly's documented Machines API limits: 1 request/s per
// action per machine (or app), burst 3; get machine 5/s, burst 10.
func FlyLimits() (action, get Limit) {
	return Limit{Rate: 1, Burst: 3}, Limit{Rate: 5, Burst: 10}
}

// AffinityCookie is the cookie the fake sets, like Fly's API, to pin a
// client's follow-up calls to one API node.
const AffinityCookie = "fly_flaps_affinity"

// Option configures a Server.
type Option func(*Server)

// WithToken requires every call to carry token ("Bearer <token>", or
// "FlyV1 <token>"); others get 401. Without it any token is accepted.
func WithToken(token string) Option { return func(s *Server) { s.token = stripScheme(token) } }

// WithApps limits the fake to these apps; others answer 404. By default
// every app name exists.
func WithApps(names ...string) Option {
	return func(s *Server) {
		for _, n := range names {
			s.appsFixed = true
			s.app(n)
		}
	}
}

// WithRegion is the region machines land in when the create asks for none
// or for an alias (default "iad").
func WithRegion(region string) Option { return func(s *Server) { s.region = region } }

// WithBootDelay is how long a machine spends in "starting" (default 10 ms).
// A negative delay means machines never finish booting: waits never settle.
func WithBootDelay(d time.Duration) Option { return func(s *Server) { s.bootDelay = d } }

// WithCreateDelay is how long a create takes before it answers (default
// 0): a host's placement and the image pull, which Fly pays on every
// create, separate from the boot (WithBootDelay). A machine created with
// skip_launch pays only this, and runs no process until it is started.
func WithCreateDelay(d time.Duration) Option { return func(s *Server) { s.createDelay = d } }

// WithStopDelay is how long a machine spends in "stopping" or "destroying"
// (default 0).
func WithStopDelay(d time.Duration) Option { return func(s *Server) { s.stopDelay = d } }

// WithRateLimits enforces limits per (action, machine or app), answering
// 429 beyond them. get applies to getting one machine, action to the rest.
func WithRateLimits(action, get Limit) Option {
	return func(s *Server) { s.actionLimit, s.getLimit, s.limitOn = action, get, true }
}

// WithFlyRateLimits enforces Fly's documented limits.
func WithFlyRateLimits() Option { return WithRateLimits(FlyLimits()) }

// WithRunner backs machines with r (see Runner). The Server owns r: a
// Runner with a Close method is closed by Server.Close.
func WithRunner(r Runner) Option { return func(s *Server) { s.runner = r } }

// WithWaitScale makes the wait endpoint's timeout pass factor times faster:
// a wait asked to hold 60 s answers 408 after 60s/factor. With a boot delay
// longer than that, a client's wait loop meets what a boot slower than one
// (or several) of Fly's 60 s waits looks like, in a fraction of the time.
// Only the wait's own timeout is scaled; factor < 1 is ignored.
func WithWaitScale(factor float64) Option {
	return func(s *Server) {
		if factor >= 1 {
			s.waitScale = factor
		}
	}
}

// WithLogger receives the fake's debug logs. Tokens are never logged.
func WithLogger(l *slog.Logger) Option { return func(s *Server) { s.log = l } }

// WithListLag hides machines from list for d after their creation, as
// Fly's eventually consistent state store can.
func WithListLag(d time.Duration) Option { return func(s *Server) { s.listLag = d } }

// WithFirstIP sets the first private IP handed out (default 127.0.0.2);
// later machines get the following addresses.
func WithFirstIP(a netip.Addr) Option { return func(s *Server) { s.nextIP = a } }

// Server is a running fake Machines API. Close it when done.
type Server struct {
	// URL is the base URL to give the client (no /v1).
	URL string

	hs     *httptest.Server
	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup

	token       string
	region      string
	bootDelay   time.Duration
	createDelay time.Duration
	stopDelay   time.Duration
	waitScale   float64
	listLag     time.Duration
	limitOn     bool
	actionLimit Limit
	getLimit    Limit
	runner      Runner
	log         *slog.Logger
	node        string

	mu        sync.Mutex
	closed    bool
	appsFixed bool
	apps      map[string]*app
	nextIP    netip.Addr
	calls     []Call
	faults    map[Op][]*queuedFault
	limiters  map[limitKey]*rate.Limiter
}

type limitKey struct {
	op Op
	id string
}

// Call is one request the fake received.
type Call struct {
	Op        Op
	Method    string
	Path      string
	Query     string
	App       string
	MachineID string
	Body      []byte
	// AuthScheme is the scheme of the Authorization header ("Bearer",
	// "FlyV1", or "" when absent); the credential itself is not kept.
	AuthScheme string
	// Affinity reports whether the request carried the affinity cookie.
	Affinity  bool
	RequestID string
	// Status is the answer's status; 0 when the connection was dropped.
	Status int
	// Fault reports whether an injected fault shaped the answer.
	Fault bool
	At    time.Time
}

// NewServer starts a fake Machines API on a loopback port.
func NewServer(opts ...Option) *Server {
	ctx, cancel := context.WithCancel(context.Background())
	s := &Server{
		ctx:       ctx,
		cancel:    cancel,
		region:    "iad",
		bootDelay: 10 * time.Millisecond,
		waitScale: 1,
		runner:    NopRunner{},
		log:       slog.New(slog.DiscardHandler),
		apps:      map[string]*app{},
		nextIP:    netip.AddrFrom4([4]byte{127, 0, 0, 2}),
		faults:    map[Op][]*queuedFault{},
		limiters:  map[limitKey]*rate.Limiter{},
		node:      randHex(6),
	}
	for _, o := range opts {
		o(s)
	}
	mux := http.NewServeMux()
	s.route(mux, "GET /v1/apps/{app}/machines", OpList, s.handleList)
	s.route(mux, "POST /v1/apps/{app}/machines", OpCreate, s.handleCreate)
	s.route(mux, "GET /v1/apps/{app}/machines/{id}", OpGet, s.handleGet)
	s.route(mux, "DELETE /v1/apps/{app}/machines/{id}", OpDestroy, s.handleDestroy)
	s.route(mux, "POST /v1/apps/{app}/machines/{id}/start", OpStart, s.handleStart)
	s.route(mux, "POST /v1/apps/{app}/machines/{id}/stop", OpStop, s.handleStop)
	s.route(mux, "GET /v1/apps/{app}/machines/{id}/wait", OpWait, s.handleWait)
	s.route(mux, "GET /v1/apps/{app}/machines/{id}/metadata", OpGetMetadata, s.handleGetMetadata)
	s.route(mux, "POST /v1/apps/{app}/machines/{id}/metadata/{key}", OpSetMetadata, s.handleSetMetadata)
	s.route(mux, "DELETE /v1/apps/{app}/machines/{id}/metadata/{key}", OpDeleteMetadata, s.handleDeleteMetadata)
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusNotFound, errBody("not found: "+r.Method+" "+r.URL.Path, ""))
	})
	s.hs = httptest.NewServer(mux)
	s.URL = s.hs.URL
	return s
}

// Close stops the server, its background work, and every process the
// Runner started (all at once), then closes the Runner if it has a Close
// method.
func (s *Server) Close() {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return
	}
	s.closed = true
	var procs []RunMachine
	for _, a := range s.apps {
		for _, m := range a.machines {
			if m.proc != nil {
				procs = append(procs, *m.proc)
				m.proc = nil
			}
			if m.bootCancel != nil {
				m.bootCancel()
			}
		}
	}
	s.mu.Unlock()
	s.cancel()
	s.hs.Close()
	s.wg.Wait()
	var wg sync.WaitGroup
	for _, p := range procs {
		wg.Go(func() { s.stopProc(p) })
	}
	wg.Wait()
	if c, ok := s.runner.(interface{ Close() error }); ok {
		if err := c.Close(); err != nil {
			s.log.Debug("fake fly runner failed to close", "error", err)
		}
	}
}

// SetBootDelay changes the boot delay for boots that begin from now on.
// A negative delay means they never finish.
func (s *Server) SetBootDelay(d time.Duration) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.bootDelay = d
}

// Calls returns every call received so far, in order of completion.
func (s *Server) Calls() []Call {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]Call(nil), s.calls...)
}

// CallCount returns how many calls of op were received.
func (s *Server) CallCount(op Op) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	for _, c := range s.calls {
		if c.Op == op {
			n++
		}
	}
	return n
}

// StatusCount returns how many calls were answered with status.
func (s *Server) StatusCount(status int) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	for _, c := range s.calls {
		if c.Status == status {
			n++
		}
	}
	return n
}

type handler func(r *http.Request, body []byte, app, id string) reply

// reply is a handler's answer, written (or withheld) by serve.
type reply struct {
	status int
	body   any // nil: no body
	header http.Header
}

func (s *Server) route(mux *http.ServeMux, pattern string, op Op, h handler) {
	mux.HandleFunc(pattern, func(w http.ResponseWriter, r *http.Request) { s.serve(w, r, op, h) })
}

// serve runs the pipeline every call goes through: request id and
// affinity cookie, authentication, app, rate limit, injected fault, the
// handler, and the call record.
func (s *Server) serve(w http.ResponseWriter, r *http.Request, op Op, h handler) {
	body, _ := io.ReadAll(io.LimitReader(r.Body, 4<<20))
	appName, id := r.PathValue("app"), r.PathValue("id")
	reqID := newULID() + "-" + s.region
	c := Call{
		Op: op, Method: r.Method, Path: r.URL.Path, Query: r.URL.RawQuery,
		App: appName, MachineID: id, Body: body, RequestID: reqID, At: time.Now(),
	}
	if scheme, _, ok := strings.Cut(r.Header.Get("Authorization"), " "); ok {
		c.AuthScheme = scheme
	}
	if ck, err := r.Cookie(AffinityCookie); err == nil && ck.Value == s.node {
		c.Affinity = true
	}
	w.Header().Set("Fly-Request-Id", reqID)
	w.Header().Set("Server", "Fly/fake")
	http.SetCookie(w, &http.Cookie{Name: AffinityCookie, Value: s.node, Path: "/v1/apps/" + appName, HttpOnly: true})

	finish := func(rep reply, fault bool) {
		c.Status, c.Fault = rep.status, fault
		write(w, rep)
		s.record(c)
	}
	if rep, ok := s.admit(r, op, appName, id); !ok {
		finish(rep, false)
		return
	}
	f := s.takeFault(op)
	if f != nil && f.Delay > 0 {
		if !s.pause(r.Context(), f.Delay) {
			finish(reply{status: http.StatusServiceUnavailable, body: errBody("server closing", "")}, true)
			return
		}
	}
	if f != nil && f.Status != 0 && !f.AfterWork && !f.Drop && !f.Hang {
		finish(faultReply(*f), true)
		return
	}
	rep := h(r, body, appName, id)
	switch {
	case f == nil:
		finish(rep, false)
	case f.Drop || f.Hang:
		if f.Hang {
			select {
			case <-r.Context().Done():
			case <-s.ctx.Done():
			}
		}
		c.Fault = true
		s.record(c)
		reset(w)
	case f.Status != 0:
		finish(faultReply(*f), true)
	default: // a pure delay
		finish(rep, true)
	}
}

// admit checks authentication, the app and the rate limit.
func (s *Server) admit(r *http.Request, op Op, appName, id string) (reply, bool) {
	if s.token != "" {
		got := stripScheme(r.Header.Get("Authorization"))
		scheme, _, _ := strings.Cut(r.Header.Get("Authorization"), " ")
		if (scheme != "Bearer" && scheme != "FlyV1") || subtle.ConstantTimeCompare([]byte(got), []byte(s.token)) != 1 {
			return reply{status: http.StatusUnauthorized, body: errBody("Authenticate: token validation error", "")}, false
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.appsFixed && s.apps[appName] == nil {
		return reply{status: http.StatusNotFound, body: errBody("app not found", "")}, false
	}
	if s.limitOn {
		key := limitKey{op: op, id: id}
		if id == "" {
			key.id = "app:" + appName
		}
		lim, ok := s.limiters[key]
		if !ok {
			l := s.actionLimit
			if op == OpGet {
				l = s.getLimit
			}
			lim = rate.NewLimiter(rate.Limit(l.Rate), l.Burst)
			s.limiters[key] = lim
		}
		if !lim.Allow() {
			return reply{status: http.StatusTooManyRequests, body: errBody("rate limit exceeded", "")}, false
		}
	}
	return reply{}, true
}

func (s *Server) record(c Call) {
	s.log.Debug("fake fly api call", "op", c.Op, "method", c.Method, "path", c.Path, "status", c.Status, "fault", c.Fault)
	s.mu.Lock()
	defer s.mu.Unlock()
	s.calls = append(s.calls, c)
}

// pause sleeps d unless the request or the server ends first.
func (s *Server) pause(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	case <-s.ctx.Done():
		return false
	}
}

func faultReply(f Fault) reply {
	msg := f.Message
	if msg == "" {
		msg = defaultMessage(f.Status)
	}
	rep := reply{status: f.Status, body: errBody(msg, f.FlyStatus)}
	if f.RetryAfter > 0 {
		secs := int((f.RetryAfter + time.Second - 1) / time.Second)
		rep.header = http.Header{"Retry-After": {fmt.Sprint(secs)}}
	}
	return rep
}

func defaultMessage(status int) string {
	switch status {
	case http.StatusTooManyRequests:
		return "rate limit exceeded"
	case http.StatusRequestTimeout:
		return "deadline_exceeded: request timed out"
	case http.StatusInternalServerError:
		return "internal server error"
	case http.StatusBadGateway, http.StatusServiceUnavailable, http.StatusGatewayTimeout:
		return "service unavailable, please retry"
	}
	return strings.ToLower(http.StatusText(status))
}

type flyError struct {
	Error  string `json:"error"`
	Status string `json:"status,omitempty"`
}

func errBody(msg, status string) flyError { return flyError{Error: msg, Status: status} }

func write(w http.ResponseWriter, rep reply) {
	for k, v := range rep.header {
		w.Header()[k] = v
	}
	if rep.body == nil {
		w.WriteHeader(rep.status)
		return
	}
	writeJSON(w, rep.status, rep.body)
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_, _ = w.Write(b)
}

func stripScheme(h string) string {
	h = strings.TrimSpace(h)
	for _, p := range []string{"Bearer ", "FlyV1 "} {
		if strings.HasPrefix(h, p) {
			return strings.TrimSpace(h[len(p):])
		}
	}
	return h
}

func randHex(n int) string {
	b := make([]byte, (n+1)/2)
	_, _ = rand.Read(b)
	return fmt.Sprintf("%x", b)[:n]
}

const crockford = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"

// newULID returns a 26-character, time-ordered id in Crockford base32.
func newULID() string {
	var out [26]byte
	ms := uint64(time.Now().UnixMilli())
	for i := 9; i >= 0; i-- {
		out[i] = crockford[ms&31]
		ms >>= 5
	}
	var r [16]byte
	_, _ = rand.Read(r[:])
	for i := 0; i < 16; i++ {
		out[10+i] = crockford[r[i]&31]
	}
	return string(out[:])
}
