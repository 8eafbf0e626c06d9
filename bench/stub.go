package bench

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"sync"
	"time"

	"github.com/google/uuid"

	"github.com/interviewvm/controlplane/pkg/session"
)

// StubController answers a session VM's internal API at no cost: a fixed
// config, and ready, heartbeat, transcript and ended accepted at once,
// without a database. It stands in for the controller when the platform
// floor is measured, so the floor pays for the VM (process start, ready
// report; its configuration comes with the machine, see ConfigEnv) exactly
// as a started interview does, and for nothing of ours.
type StubController struct {
	URL string
	srv *httptest.Server

	mu      sync.Mutex
	waiters map[string]*stubSession
}

type stubSession struct {
	token string
	ready chan struct{}
	once  sync.Once
}

// NewStubController starts one on a loopback port.
func NewStubController() *StubController {
	s := &StubController{waiters: map[string]*stubSession{}}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /internal/v1/sessions/{id}/config", s.config)
	mux.HandleFunc("POST /internal/v1/sessions/{id}/ready", s.ready)
	mux.HandleFunc("POST /internal/v1/sessions/{id}/heartbeat", func(w http.ResponseWriter, r *http.Request) {
		if s.session(r) == nil {
			http.Error(w, `{"error":{"code":"unauthenticated"}}`, http.StatusUnauthorized)
			return
		}
		writeJSON(w, session.HeartbeatAnswer{Action: session.ActionContinue})
	})
	mux.HandleFunc("POST /internal/v1/sessions/{id}/transcript", func(w http.ResponseWriter, r *http.Request) {
		var b session.TranscriptBatch
		_ = json.NewDecoder(r.Body).Decode(&b)
		var last int64
		for _, sg := range b.Segments {
			last = max(last, sg.Seq)
		}
		writeJSON(w, session.TranscriptAck{AckedSeq: last})
	})
	mux.HandleFunc("POST /internal/v1/sessions/{id}/ended", func(w http.ResponseWriter, _ *http.Request) {
		w.WriteHeader(http.StatusNoContent)
	})
	s.srv = httptest.NewServer(mux)
	s.URL = s.srv.URL
	return s
}

// Close stops the server.
func (s *StubController) Close() { s.srv.Close() }

// Expect registers a session and returns a channel closed when its VM
// reports ready.
func (s *StubController) Expect(id, token string) <-chan struct{} {
	ss := &stubSession{token: token, ready: make(chan struct{})}
	s.mu.Lock()
	s.waiters[id] = ss
	s.mu.Unlock()
	return ss.ready
}

// Forget drops a session.
func (s *StubController) Forget(id string) {
	s.mu.Lock()
	delete(s.waiters, id)
	s.mu.Unlock()
}

func (s *StubController) session(r *http.Request) *stubSession {
	s.mu.Lock()
	ss := s.waiters[r.PathValue("id")]
	s.mu.Unlock()
	if ss == nil || r.Header.Get("Authorization") != "Bearer "+ss.token {
		return nil
	}
	return ss
}

func (s *StubController) config(w http.ResponseWriter, r *http.Request) {
	if s.session(r) == nil {
		http.Error(w, `{"error":{"code":"unauthenticated"}}`, http.StatusUnauthorized)
		return
	}
	writeJSON(w, stubConfig(r.PathValue("id")))
}

// stubConfig is the configuration the stub gives session id's VM.
func stubConfig(id string) session.VMConfig {
	return session.VMConfig{
		SessionID: id, TenantID: uuid.NewString(), Architecture: "hybrid",
		Realtime: session.RealtimeSimulated, Deadline: time.Now().Add(time.Hour), MaxDurationS: 3600,
		HeartbeatIntervalMS: 2000,
		Position: session.Position{Title: "Backend engineer", Competencies: []session.Competency{
			{Name: "Go", Weight: 3}, {Name: "PostgreSQL", Weight: 2},
		}},
	}
}

// ConfigEnv is the configuration of session id's VM as the controller
// hands it over with the machine (the value of session.EnvSessionConfig):
// a floor VM gets it the way ours does, and fetches nothing.
func ConfigEnv(id string) string {
	b, _ := json.Marshal(stubConfig(id)) // plain data: cannot fail
	return string(b)
}

func (s *StubController) ready(w http.ResponseWriter, r *http.Request) {
	ss := s.session(r)
	if ss == nil {
		http.Error(w, `{"error":{"code":"unauthenticated"}}`, http.StatusUnauthorized)
		return
	}
	ss.once.Do(func() { close(ss.ready) })
	w.WriteHeader(http.StatusNoContent)
}

func writeJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(v)
}
