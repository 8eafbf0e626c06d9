// Package controlclienttest is a fake of the controller's internal API (the
// routes of pkg/session/wire.go) for tests of session VMs and machine
// providers. It records every call, answers heartbeats as told, and
// behaves like the controller where it matters to a VM: a wrong token gets
// 401, a session that reported ended (or was ended with EndSession) is no
// longer live and gets 409, and transcript segments are stored
// idempotently on (session, seq) — the first copy of a seq wins — and
// acknowledged with the highest contiguous seq stored.
//
// Faults: FailNext and SetFault answer error statuses or drop the
// connection without an answer (StatusDrop); Stop and Start take the
// whole fake down and bring it back on the same address, keeping what it
// stored, as a controller restart would.
package controlclienttest

import (
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/interviewvm/controlplane/pkg/session"
)

// Routes of the internal API, as recorded in Call.Route.
const (
	RouteConfig     = "config"
	RouteReady      = "ready"
	RouteHeartbeat  = "heartbeat"
	RouteTranscript = "transcript"
	RouteEnded      = "ended"
)

// Call is one request the fake received for a known session.
type Call struct {
	SessionID string
	Route     string
	// Status is what the fake answered.
	Status int
	Body   []byte
	At     time.Time
}

// Decode unmarshals the call's JSON body into v.
func (c Call) Decode(v any) error {
	if err := json.Unmarshal(c.Body, v); err != nil {
		return fmt.Errorf("decode %s body: %w", c.Route, err)
	}
	return nil
}

type fakeSession struct {
	token     string
	cfg       session.VMConfig
	notLive   bool
	heartbeat session.HeartbeatAnswer
	fail      map[string][]int // route → statuses to answer next
	stored    map[int64]session.Segment
	conflicts int   // segments re-sent with a different content
	acked     int64 // highest contiguous stored seq
	calls     []Call
}

// Server is the fake controller. Create it with NewServer and Close it.
type Server struct {
	// URL is the base URL to give a VM as CONTROLLER_URL.
	URL string

	addr string // host:port, kept across Stop and Start

	mu       sync.Mutex
	srv      *httptest.Server // nil while stopped
	sessions map[string]*fakeSession
	fault    func(sessionID, route string) int
	changed  chan struct{} // closed and replaced on every recorded call
}

// StatusDrop, as a status given to FailNext or returned by a fault
// function, makes the fake close the connection without answering.
const StatusDrop = -1

// NewServer starts a fake controller with no sessions.
func NewServer() *Server {
	s := &Server{
		sessions: make(map[string]*fakeSession),
		changed:  make(chan struct{}),
	}
	s.srv = httptest.NewServer(http.HandlerFunc(s.serve))
	s.URL = s.srv.URL
	s.addr = s.srv.Listener.Addr().String()
	return s
}

// Close shuts the fake down.
func (s *Server) Close() { s.Stop() }

// Stop takes the fake down: open connections are closed and new ones
// refused until Start. What it stored is kept.
func (s *Server) Stop() {
	s.mu.Lock()
	srv := s.srv
	s.srv = nil
	s.mu.Unlock()
	if srv != nil {
		srv.CloseClientConnections()
		srv.Close()
	}
}

// Start brings a stopped fake back on its address.
func (s *Server) Start() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.srv != nil {
		return nil
	}
	ln, err := net.Listen("tcp", s.addr)
	if err != nil {
		return fmt.Errorf("listen again on %s: %w", s.addr, err)
	}
	srv := httptest.NewUnstartedServer(http.HandlerFunc(s.serve))
	srv.Listener.Close()
	srv.Listener = ln
	srv.Start()
	s.srv = srv
	return nil
}

// SetFault installs a function asked before every call of a known session
// (after FailNext's statuses): it returns 0 to answer normally, an error
// status to answer, or StatusDrop. Nil removes it.
func (s *Server) SetFault(f func(sessionID, route string) int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.fault = f
}

// Segments returns the transcript segments stored for a session, by seq.
func (s *Server) Segments(sessionID string) []session.Segment {
	s.mu.Lock()
	defer s.mu.Unlock()
	fs := s.sessions[sessionID]
	if fs == nil {
		return nil
	}
	segs := make([]session.Segment, 0, len(fs.stored))
	for _, seg := range fs.stored {
		segs = append(segs, seg)
	}
	slices.SortFunc(segs, func(a, b session.Segment) int { return cmp.Compare(a.Seq, b.Seq) })
	return segs
}

// AckedSeq returns the highest contiguous seq stored for a session.
func (s *Server) AckedSeq(sessionID string) int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	if fs := s.sessions[sessionID]; fs != nil {
		return fs.acked
	}
	return 0
}

// Conflicts counts the segments a session re-sent with a seq already
// stored but a different speaker, text, item or failure flag.
func (s *Server) Conflicts(sessionID string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	if fs := s.sessions[sessionID]; fs != nil {
		return fs.conflicts
	}
	return 0
}

// AddSession registers a live session cfg.SessionID authenticated by token.
// Its heartbeats are answered "continue" until told otherwise.
func (s *Server) AddSession(token string, cfg session.VMConfig) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.sessions[cfg.SessionID] = &fakeSession{
		token:     token,
		cfg:       cfg,
		heartbeat: session.HeartbeatAnswer{Action: session.ActionContinue},
		fail:      make(map[string][]int),
		stored:    make(map[int64]session.Segment),
	}
}

// SetHeartbeatAnswer sets what the session's next heartbeats are answered.
func (s *Server) SetHeartbeatAnswer(sessionID string, a session.HeartbeatAnswer) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if fs := s.sessions[sessionID]; fs != nil {
		fs.heartbeat = a
	}
}

// EndSession makes the session no longer live: every later call gets 409.
func (s *Server) EndSession(sessionID string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if fs := s.sessions[sessionID]; fs != nil {
		fs.notLive = true
	}
}

// FailNext makes the session's next len(statuses) calls of route answer
// those statuses, in order, with the contract's error body (StatusDrop:
// no answer, the connection is closed).
func (s *Server) FailNext(sessionID, route string, statuses ...int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if fs := s.sessions[sessionID]; fs != nil {
		fs.fail[route] = append(fs.fail[route], statuses...)
	}
}

// Calls returns the calls recorded for a session, oldest first.
func (s *Server) Calls(sessionID string) []Call {
	s.mu.Lock()
	defer s.mu.Unlock()
	if fs := s.sessions[sessionID]; fs != nil {
		return append([]Call(nil), fs.calls...)
	}
	return nil
}

// WaitCall waits for the n-th (1-based) successful call of route for the
// session and returns it.
func (s *Server) WaitCall(ctx context.Context, sessionID, route string, n int) (Call, error) {
	for {
		s.mu.Lock()
		changed := s.changed
		seen := 0
		if fs := s.sessions[sessionID]; fs != nil {
			for _, c := range fs.calls {
				if c.Route == route && c.Status < 300 {
					seen++
					if seen == n {
						s.mu.Unlock()
						return c, nil
					}
				}
			}
		}
		s.mu.Unlock()
		select {
		case <-changed:
		case <-ctx.Done():
			return Call{}, fmt.Errorf("wait for %s call %d of session %s (saw %d): %w", route, n, sessionID, seen, ctx.Err())
		}
	}
}

func (s *Server) serve(w http.ResponseWriter, r *http.Request) {
	rest, ok := strings.CutPrefix(r.URL.Path, "/internal/v1/sessions/")
	id, route, ok2 := strings.Cut(rest, "/")
	if !ok || !ok2 || strings.Contains(route, "/") {
		writeError(w, http.StatusNotFound, session.ENOTFOUND, "no such route")
		return
	}
	wantMethod := http.MethodPost
	if route == RouteConfig {
		wantMethod = http.MethodGet
	}
	switch route {
	case RouteConfig, RouteReady, RouteHeartbeat, RouteTranscript, RouteEnded:
	default:
		writeError(w, http.StatusNotFound, session.ENOTFOUND, "no such route")
		return
	}
	if r.Method != wantMethod {
		writeError(w, http.StatusMethodNotAllowed, session.EINVALID, "method not allowed")
		return
	}
	body, err := io.ReadAll(io.LimitReader(r.Body, 1<<20))
	if err != nil {
		writeError(w, http.StatusBadRequest, session.EINVALID, "read body")
		return
	}

	s.mu.Lock()
	defer s.mu.Unlock()
	fs := s.sessions[id]
	if fs == nil || r.Header.Get("Authorization") != "Bearer "+fs.token {
		writeError(w, http.StatusUnauthorized, session.EUNAUTHENTICATED, "invalid session token")
		return
	}
	status, answer := s.answer(fs, id, route, body)
	fs.calls = append(fs.calls, Call{SessionID: id, Route: route, Status: status, Body: body, At: time.Now()})
	close(s.changed)
	s.changed = make(chan struct{})

	switch {
	case status == StatusDrop:
		if hj, ok := w.(http.Hijacker); ok {
			if conn, _, err := hj.Hijack(); err == nil {
				conn.Close()
				return
			}
		}
		panic(http.ErrAbortHandler)
	case status >= 300:
		writeError(w, status, codeOf(status), "fake controller refused "+route)
	case answer == nil:
		w.WriteHeader(status)
	default:
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(status)
		_ = json.NewEncoder(w).Encode(answer)
	}
}

// answer decides the status and JSON answer of a call; s.mu is held.
func (s *Server) answer(fs *fakeSession, id, route string, body []byte) (int, any) {
	if q := fs.fail[route]; len(q) > 0 {
		fs.fail[route] = q[1:]
		return q[0], nil
	}
	if s.fault != nil {
		if st := s.fault(id, route); st != 0 {
			return st, nil
		}
	}
	if fs.notLive {
		return http.StatusConflict, nil
	}
	if route != RouteConfig && !json.Valid(body) {
		return http.StatusBadRequest, nil
	}
	switch route {
	case RouteConfig:
		return http.StatusOK, fs.cfg
	case RouteHeartbeat:
		return http.StatusOK, fs.heartbeat
	case RouteTranscript:
		var b session.TranscriptBatch
		if json.Unmarshal(body, &b) != nil {
			return http.StatusBadRequest, nil
		}
		for _, seg := range b.Segments {
			if seg.Seq < 1 {
				return http.StatusBadRequest, nil
			}
		}
		for _, seg := range b.Segments {
			old, dup := fs.stored[seg.Seq]
			switch {
			case !dup:
				fs.stored[seg.Seq] = seg
			case old.Speaker != seg.Speaker || old.Text != seg.Text || old.ItemID != seg.ItemID || old.Failed != seg.Failed:
				fs.conflicts++
			}
		}
		for {
			if _, ok := fs.stored[fs.acked+1]; !ok {
				break
			}
			fs.acked++
		}
		return http.StatusOK, session.TranscriptAck{AckedSeq: fs.acked}
	case RouteEnded:
		fs.notLive = true
		return http.StatusNoContent, nil
	}
	return http.StatusNoContent, nil
}

func codeOf(status int) string {
	switch status {
	case http.StatusBadRequest:
		return session.EINVALID
	case http.StatusUnauthorized:
		return session.EUNAUTHENTICATED
	case http.StatusConflict:
		return session.ECONFLICT
	case http.StatusTooManyRequests:
		return session.ERATELIMITED
	case http.StatusServiceUnavailable:
		return session.EUNAVAILABLE
	}
	return session.EINTERNAL
}

func writeError(w http.ResponseWriter, status int, code, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(map[string]any{"error": map[string]string{"code": code, "message": msg}})
}
