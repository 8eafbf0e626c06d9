package bench

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/interviewvm/controlplane/pkg/flymachines/flymachinestest"
	"github.com/interviewvm/controlplane/pkg/session"
)

// SyntheticVMs is a flymachinestest.Runner whose machines are goroutines
// speaking sessionvm's internal API: when the fake boots a machine, its VM
// fetches its config with the session token from the machine's env,
// reports ready, and then (optionally) heartbeats and posts transcript
// segments. No process runs: it stands for a VM that is up the moment its
// machine starts, the cheapest VM there is.
type SyntheticVMs struct {
	// Heartbeat makes the VMs heartbeat at the interval their config
	// gives.
	Heartbeat bool
	// SegmentEvery, when positive, makes each VM post one segment per
	// period (after a random offset), from seq 1 on.
	SegmentEvery time.Duration
	// PerVMConn gives each VM its own HTTP transport, so each keeps its
	// own keep-alive connection to the controller, as real VMs do.
	// Otherwise the VMs share a pool of connections.
	PerVMConn bool
	// Hold, when not nil, delays every VM's heartbeats and segments
	// until it is closed (they report ready at once regardless).
	Hold chan struct{}

	hc     *http.Client
	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu   sync.Mutex
	vms  map[string]*SyntheticVM // by machine id
	byID map[string]*SyntheticVM // by session id

	Ready  atomic.Int64
	Errors atomic.Int64
	// Beating counts the VMs whose first heartbeat was answered.
	Beating   atomic.Int64
	Beats     atomic.Int64
	Segments  atomic.Int64
	lastError atomic.Value
}

// SyntheticVM is one synthetic session VM.
type SyntheticVM struct {
	SessionID, Token, Base, MachineID string

	hc     *http.Client
	cancel context.CancelFunc
	// beating is set once a heartbeat was answered (only the VM's own
	// goroutine reads and writes it).
	beating bool
}

// NewSyntheticVMs returns a runner whose VMs share one HTTP transport
// sized for conns connections.
func NewSyntheticVMs(conns int) *SyntheticVMs {
	ctx, cancel := context.WithCancel(context.Background())
	return &SyntheticVMs{
		hc:  &http.Client{Transport: newTransport(conns), Timeout: 60 * time.Second},
		ctx: ctx, cancel: cancel,
		vms: map[string]*SyntheticVM{}, byID: map[string]*SyntheticVM{},
	}
}

var _ flymachinestest.Runner = (*SyntheticVMs)(nil)

// Start implements flymachinestest.Runner.
func (s *SyntheticVMs) Start(_ context.Context, m flymachinestest.RunMachine) error {
	v := &SyntheticVM{
		SessionID: m.Env[session.EnvSessionID], Token: m.Env[session.EnvSessionToken],
		Base: m.Env[session.EnvControllerURL], MachineID: m.ID, hc: s.hc,
	}
	if s.PerVMConn {
		tr := newTransport(1)
		tr.MaxConnsPerHost = 1 // one connection per VM: heartbeats and posts take turns on it
		v.hc = &http.Client{Transport: tr, Timeout: 60 * time.Second}
	}
	if v.SessionID == "" || v.Token == "" || v.Base == "" {
		return fmt.Errorf("machine %s lacks the session env", m.ID)
	}
	ctx, cancel := context.WithCancel(s.ctx)
	v.cancel = cancel
	s.mu.Lock()
	s.vms[m.ID] = v
	s.byID[v.SessionID] = v
	s.mu.Unlock()
	s.wg.Go(func() { s.run(ctx, v) })
	return nil
}

// Stop implements flymachinestest.Runner.
func (s *SyntheticVMs) Stop(_ context.Context, m flymachinestest.RunMachine) error {
	s.mu.Lock()
	v := s.vms[m.ID]
	delete(s.vms, m.ID)
	if v != nil && s.byID[v.SessionID] == v {
		delete(s.byID, v.SessionID)
	}
	s.mu.Unlock()
	if v != nil {
		v.cancel()
		if s.PerVMConn {
			v.hc.CloseIdleConnections()
		}
	}
	return nil
}

// Close stops every VM and waits for them.
func (s *SyntheticVMs) Close() error {
	s.cancel()
	s.wg.Wait()
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, v := range s.vms {
		v.hc.CloseIdleConnections()
	}
	return nil
}

// VM returns the VM of a session.
func (s *SyntheticVMs) VM(sessionID string) *SyntheticVM {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.byID[sessionID]
}

// LastError returns the last error a VM met, or "".
func (s *SyntheticVMs) LastError() string {
	v, _ := s.lastError.Load().(string)
	return v
}

func (s *SyntheticVMs) fail(err error) {
	s.Errors.Add(1)
	s.lastError.Store(err.Error())
}

func (s *SyntheticVMs) run(ctx context.Context, v *SyntheticVM) {
	var cfg session.VMConfig
	if err := retry(ctx, func() error { return v.call(ctx, "GET", "config", nil, &cfg) }); err != nil {
		if ctx.Err() == nil {
			s.fail(err)
		}
		return
	}
	if err := retry(ctx, func() error {
		return v.call(ctx, "POST", "ready", session.ReadyRequest{MachineID: v.MachineID}, nil)
	}); err != nil {
		if ctx.Err() == nil {
			s.fail(err)
		}
		return
	}
	s.Ready.Add(1)
	if s.Hold != nil {
		select {
		case <-s.Hold:
		case <-ctx.Done():
			return
		}
	}
	if s.SegmentEvery > 0 {
		s.wg.Go(func() { s.postSegments(ctx, v) })
	}
	if !s.Heartbeat {
		return
	}
	every := cfg.HeartbeatInterval()
	if every <= 0 {
		every = 2 * time.Second
	}
	// Spread the VMs over the interval, as VMs started at different times
	// are; then beat on a ticker, as sessionvm does: a slow answer does
	// not stretch the period (a tick missed meanwhile is dropped).
	select {
	case <-ctx.Done():
		return
	case <-time.After(time.Duration(rand.Int64N(int64(every)))):
	}
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		if !s.heartbeat(ctx, v) {
			return
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// postSegments posts one segment per SegmentEvery until ctx ends or the
// controller refuses.
func (s *SyntheticVMs) postSegments(ctx context.Context, v *SyntheticVM) {
	t := time.NewTimer(time.Duration(rand.Int64N(int64(s.SegmentEvery))))
	defer t.Stop()
	var seq int64
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		seq++
		if _, err := v.Post(ctx, nil, []session.Segment{Segment(seq)}); err != nil {
			if ctx.Err() == nil {
				s.fail(err)
			}
			return
		}
		s.Segments.Add(1)
		t.Reset(s.SegmentEvery)
	}
}

// heartbeat sends one heartbeat and reports whether to go on: as sessionvm
// does, a VM keeps beating after a failed call (the controller's timeout
// is the safety net) and stops on a refusal or an "end".
func (s *SyntheticVMs) heartbeat(ctx context.Context, v *SyntheticVM) bool {
	var ans session.HeartbeatAnswer
	if err := v.call(ctx, "POST", "heartbeat", session.Heartbeat{}, &ans); err != nil {
		if ctx.Err() != nil {
			return false
		}
		s.fail(err)
		var se *StatusError
		return !errors.As(err, &se) || (se.Status != http.StatusUnauthorized && se.Status != http.StatusConflict)
	}
	s.Beats.Add(1)
	if !v.beating {
		v.beating = true
		s.Beating.Add(1)
	}
	return ans.Action == session.ActionContinue
}

// Segment returns a segment of typical length (one spoken sentence).
func Segment(seq int64) session.Segment {
	sp := session.SpeakerCandidate
	if seq%2 == 1 {
		sp = session.SpeakerInterviewer
	}
	return session.Segment{
		Seq: seq, Speaker: sp, ItemID: fmt.Sprintf("item_%d", seq),
		Text: "I would start by profiling the ingest path, then batch the inserts and measure again before changing anything else.",
	}
}

// call sends one internal API call of the VM.
func (v *SyntheticVM) call(ctx context.Context, method, op string, body, out any) error {
	return vmCall(ctx, v.hc, v.Base, v.SessionID, v.Token, method, op, body, out)
}

// Post posts a transcript batch through hc (nil: the VM's own client) and
// returns the acknowledged seq.
func (v *SyntheticVM) Post(ctx context.Context, hc *http.Client, segs []session.Segment) (int64, error) {
	if hc == nil {
		hc = v.hc
	}
	var ack session.TranscriptAck
	err := vmCall(ctx, hc, v.Base, v.SessionID, v.Token, "POST", "transcript", session.TranscriptBatch{Segments: segs}, &ack)
	return ack.AckedSeq, err
}

func vmCall(ctx context.Context, hc *http.Client, base, id, token, method, op string, body, out any) error {
	var r io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return err
		}
		r = bytes.NewReader(b)
	}
	path := strings.TrimSuffix(base, "/") + "/internal/v1/sessions/" + id + "/" + op
	req, err := http.NewRequestWithContext(ctx, method, path, r)
	if err != nil {
		return err
	}
	req.Header.Set("Authorization", "Bearer "+token)
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := hc.Do(req)
	if err != nil {
		return fmt.Errorf("%s %s: %w", method, op, err)
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	if err != nil {
		return fmt.Errorf("%s %s: %w", method, op, err)
	}
	if resp.StatusCode >= 300 {
		return &StatusError{Method: method, Path: op, Status: resp.StatusCode, Body: string(raw)}
	}
	if out != nil {
		if err := json.Unmarshal(raw, out); err != nil {
			return fmt.Errorf("%s %s: decode: %w", method, op, err)
		}
	}
	return nil
}

// retry runs fn until it succeeds, ctx ends, or 30 s pass; it retries
// network errors and 5xx answers.
func retry(ctx context.Context, fn func() error) error {
	deadline := time.Now().Add(30 * time.Second)
	wait := 20 * time.Millisecond
	for {
		err := fn()
		if err == nil {
			return nil
		}
		var se *StatusError
		if errors.As(err, &se) && se.Status < 500 {
			return err
		}
		if ctx.Err() != nil || time.Now().After(deadline) {
			return err
		}
		select {
		case <-ctx.Done():
			return err
		case <-time.After(wait):
		}
		wait = min(2*wait, time.Second)
	}
}
