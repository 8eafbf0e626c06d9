package transcript_test

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/interviewvm/controlplane/pkg/controlclient"
	"github.com/interviewvm/controlplane/pkg/controlclient/controlclienttest"
	"github.com/interviewvm/controlplane/pkg/session"
	"github.com/interviewvm/controlplane/pkg/transcript"
)

const (
	sessionID = "7b4d0e5f-9a12-4c3d-8e9f-0a1b2c3d4e5f"
	token     = "outbox-test-token"
)

// harness is an outbox posting to a fake controller through the real
// client.
type harness struct {
	ctl    *controlclienttest.Server
	client *controlclient.Client
	box    *transcript.Outbox
	cancel context.CancelFunc
	done   chan error
}

func newHarness(t *testing.T, cfg transcript.OutboxConfig) *harness {
	t.Helper()
	ctl := controlclienttest.NewServer()
	ctl.AddSession(token, session.VMConfig{SessionID: sessionID})
	client := controlclient.New(controlclient.Config{
		BaseURL: ctl.URL, SessionID: sessionID, Token: token,
		RetryMax: 1, RetryWaitMin: 10 * time.Millisecond, RetryWaitMax: 20 * time.Millisecond, Timeout: 2 * time.Second,
	})
	cfg.Poster = client
	cfg.Permanent = controlclient.IsPermanent
	if cfg.RetryWaitMin == 0 {
		cfg.RetryWaitMin, cfg.RetryWaitMax = 20*time.Millisecond, 200*time.Millisecond
	}
	box := transcript.NewOutbox(cfg)
	ctx, cancel := context.WithCancel(context.Background())
	h := &harness{ctl: ctl, client: client, box: box, cancel: cancel, done: make(chan error, 1)}
	go func() { h.done <- box.Run(ctx) }()
	t.Cleanup(func() {
		h.cancel()
		<-h.done
		client.CloseIdleConnections()
		ctl.Close()
	})
	return h
}

func segment(seq int64) session.Segment {
	speaker := session.SpeakerCandidate
	if seq%2 == 1 {
		speaker = session.SpeakerInterviewer
	}
	return session.Segment{Seq: seq, Speaker: speaker, Text: fmt.Sprintf("line %d", seq), ItemID: fmt.Sprintf("item_%d", seq)}
}

func segments(from, to int64) []session.Segment {
	var out []session.Segment
	for s := from; s <= to; s++ {
		out = append(out, segment(s))
	}
	return out
}

// checkStored checks the controller holds segments 1..n exactly once.
func (h *harness) checkStored(t *testing.T, n int64) {
	t.Helper()
	if diff := cmp.Diff(segments(1, n), h.ctl.Segments(sessionID)); diff != "" {
		t.Errorf("stored transcript (-want +got):\n%s", diff)
	}
	if c := h.ctl.Conflicts(sessionID); c != 0 {
		t.Errorf("%d segments were re-sent with different content", c)
	}
	if got := h.ctl.AckedSeq(sessionID); got != n {
		t.Errorf("controller acked %d, want %d", got, n)
	}
	st := h.box.Stats()
	if st.AckedSeq != n || st.LastSeq != n || st.Buffered != 0 {
		t.Errorf("outbox stats = %+v, want everything acked up to %d", st, n)
	}
}

func (h *harness) flush(t *testing.T, d time.Duration) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), d)
	defer cancel()
	if err := h.box.Flush(ctx); err != nil {
		t.Fatal(err)
	}
}

func transcriptPosts(ctl *controlclienttest.Server) []session.TranscriptBatch {
	var out []session.TranscriptBatch
	for _, c := range ctl.Calls(sessionID) {
		if c.Route == controlclienttest.RouteTranscript {
			var b session.TranscriptBatch
			if c.Decode(&b) == nil {
				out = append(out, b)
			}
		}
	}
	return out
}

func TestOutboxBatches(t *testing.T) {
	h := newHarness(t, transcript.OutboxConfig{BatchDelay: time.Hour})
	// 120 segments at once go out in batches of at most 50 without waiting
	// the batching delay for full batches; the rest waits for Flush.
	if err := h.box.Add(segments(1, 120)...); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	if _, err := h.ctl.WaitCall(ctx, sessionID, controlclienttest.RouteTranscript, 2); err != nil {
		t.Fatal(err)
	}
	time.Sleep(50 * time.Millisecond)
	if n := len(transcriptPosts(h.ctl)); n != 2 {
		t.Errorf("%d posts before the flush, want 2 full batches", n)
	}
	h.flush(t, 10*time.Second)
	var sizes []int
	for _, b := range transcriptPosts(h.ctl) {
		sizes = append(sizes, len(b.Segments))
	}
	if !cmp.Equal(sizes, []int{50, 50, 20}) {
		t.Errorf("batch sizes = %v, want [50 50 20]", sizes)
	}
	h.checkStored(t, 120)
	// Out-of-sequence segments are ignored.
	if err := h.box.Add(segment(7)); err != nil {
		t.Fatal(err)
	}
	if st := h.box.Stats(); st.LastSeq != 120 || st.Buffered != 0 {
		t.Errorf("stats after a stale add = %+v", st)
	}
}

func TestOutboxBatchDelay(t *testing.T) {
	h := newHarness(t, transcript.OutboxConfig{BatchDelay: 100 * time.Millisecond})
	start := time.Now()
	for s := int64(1); s <= 3; s++ {
		if err := h.box.Add(segment(s)); err != nil {
			t.Fatal(err)
		}
	}
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	c, err := h.ctl.WaitCall(ctx, sessionID, controlclienttest.RouteTranscript, 1)
	if err != nil {
		t.Fatal(err)
	}
	if d := c.At.Sub(start); d < 90*time.Millisecond {
		t.Errorf("first post after %v, want the 100ms batching delay", d)
	}
	var b session.TranscriptBatch
	if err := c.Decode(&b); err != nil || len(b.Segments) != 3 {
		t.Errorf("first batch = %+v, %v; want the 3 segments together", b, err)
	}
	h.flush(t, 10*time.Second)
	h.checkStored(t, 3)
}

// TestOutboxSurvivesFaults runs a transcript through a controller that
// answers 503s, drops connections, fails half its requests for a while,
// and then goes down and comes back on the same address: afterwards it
// holds every segment exactly once.
func TestOutboxSurvivesFaults(t *testing.T) {
	h := newHarness(t, transcript.OutboxConfig{BatchDelay: 5 * time.Millisecond, MaxBatch: 7})
	var seq int64
	produce := func(n int) {
		for range n {
			seq++
			if err := h.box.Add(segment(seq)); err != nil {
				t.Fatal(err)
			}
			time.Sleep(2 * time.Millisecond)
		}
	}

	h.ctl.FailNext(sessionID, controlclienttest.RouteTranscript,
		http.StatusServiceUnavailable, http.StatusServiceUnavailable, http.StatusServiceUnavailable,
		controlclienttest.StatusDrop, http.StatusBadGateway, controlclienttest.StatusDrop)
	produce(20)

	var calls atomic.Int64
	h.ctl.SetFault(func(_, route string) int {
		if route == controlclienttest.RouteTranscript && calls.Add(1)%2 == 0 {
			return http.StatusServiceUnavailable
		}
		return 0
	})
	produce(30)
	h.ctl.SetFault(nil)

	h.ctl.Stop()
	produce(25) // while the controller is down
	var wg sync.WaitGroup
	wg.Go(func() {
		time.Sleep(1500 * time.Millisecond)
		if err := h.ctl.Start(); err != nil {
			t.Error(err)
		}
	})
	h.flush(t, 30*time.Second)
	wg.Wait()
	h.checkStored(t, seq)
	if st := h.box.Stats(); st.Retries < 5 {
		t.Errorf("retries = %d, want the failures counted", st.Retries)
	}
}

func TestOutboxPermanentFailure(t *testing.T) {
	h := newHarness(t, transcript.OutboxConfig{BatchDelay: time.Millisecond})
	h.ctl.EndSession(sessionID)
	if err := h.box.Add(segments(1, 3)...); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-h.done:
		if !errors.Is(err, controlclient.ErrNotLive) {
			t.Errorf("Run = %v, want ErrNotLive", err)
		}
		h.done <- err // for the cleanup
	case <-time.After(10 * time.Second):
		t.Fatal("Run did not stop on a 409")
	}
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
	defer cancel()
	if err := h.box.Flush(ctx); !errors.Is(err, transcript.ErrStopped) || !errors.Is(err, controlclient.ErrNotLive) {
		t.Errorf("Flush = %v, want ErrStopped and ErrNotLive", err)
	}
	if st := h.box.Stats(); st.Buffered != 3 {
		t.Errorf("stats = %+v, want the 3 segments still kept", st)
	}
}

func TestOutboxFull(t *testing.T) {
	h := newHarness(t, transcript.OutboxConfig{MaxBuffered: 5, BatchDelay: time.Millisecond})
	h.ctl.Stop()
	if err := h.box.Add(segments(1, 5)...); err != nil {
		t.Fatalf("Add up to the bound = %v", err)
	}
	if err := h.box.Add(segment(6)); !errors.Is(err, transcript.ErrFull) {
		t.Errorf("Add past the bound = %v, want ErrFull", err)
	}
	if st := h.box.Stats(); st.Buffered != 6 || st.LastSeq != 6 {
		t.Errorf("stats = %+v, want all 6 kept", st)
	}
	if err := h.ctl.Start(); err != nil {
		t.Fatal(err)
	}
	h.flush(t, 20*time.Second)
	h.checkStored(t, 6)
}

func TestOutboxFlushDeadline(t *testing.T) {
	h := newHarness(t, transcript.OutboxConfig{BatchDelay: time.Millisecond})
	h.ctl.Stop()
	if err := h.box.Add(segments(1, 2)...); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 300*time.Millisecond)
	defer cancel()
	if err := h.box.Flush(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Flush = %v, want the deadline", err)
	}
}
