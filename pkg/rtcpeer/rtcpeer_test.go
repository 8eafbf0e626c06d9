package rtcpeer_test

import (
	"context"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"go.uber.org/goleak"

	"github.com/interviewvm/controlplane/pkg/realtime"
	"github.com/interviewvm/controlplane/pkg/rtcpeer"
	"github.com/interviewvm/controlplane/pkg/rtcpeer/rtcpeertest"
	"github.com/interviewvm/controlplane/pkg/session"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestQuestionsFollowWeights(t *testing.T) {
	count := func(qs []string, name string) int {
		n := 0
		for _, q := range qs {
			if strings.Contains(q, name) {
				n++
			}
		}
		return n
	}
	for name, tc := range map[string]struct {
		comps []session.Competency
		total int
		want  map[string]int
	}{
		"3:2 of 5":        {comps: []session.Competency{{Name: "Go", Weight: 3}, {Name: "SQL", Weight: 2}}, total: 5, want: map[string]int{"Go": 3, "SQL": 2}},
		"0.6/0.4 of 5":    {comps: []session.Competency{{Name: "SQL", Weight: 0.4}, {Name: "Go", Weight: 0.6}}, total: 5, want: map[string]int{"Go": 3, "SQL": 2}},
		"one each":        {comps: []session.Competency{{Name: "Go", Weight: 9}, {Name: "SQL", Weight: 0.1}, {Name: "K8s", Weight: 0.1}}, total: 2, want: map[string]int{"Go": 1, "SQL": 1, "K8s": 1}},
		"heavy gets more": {comps: []session.Competency{{Name: "Go", Weight: 8}, {Name: "SQL", Weight: 1}, {Name: "K8s", Weight: 1}}, total: 6, want: map[string]int{"Go": 4, "SQL": 1, "K8s": 1}},
	} {
		t.Run(name, func(t *testing.T) {
			qs := rtcpeer.Questions(session.Position{Title: "SRE", Competencies: tc.comps}, tc.total)
			got := map[string]int{}
			for n := range tc.want {
				got[n] = count(qs, n)
			}
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Errorf("questions per competency (-want +got):\n%s\n%q", diff, qs)
			}
		})
	}
	if qs := rtcpeer.Questions(session.Position{Title: "SRE"}, 5); len(qs) == 0 {
		t.Error("no questions for a position without competencies")
	}
}

// recorder collects the interviewer's server-side events.
type recorder struct {
	mu     sync.Mutex
	events []realtime.Event
}

func (r *recorder) add(ev realtime.Event) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.events = append(r.events, ev)
}

func (r *recorder) types() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	var ts []string
	for _, ev := range r.events {
		ts = append(ts, ev.Type+" "+ev.ItemID)
	}
	return ts
}

func TestInterviewOverLoopback(t *testing.T) {
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	var rec recorder
	iv := rtcpeer.NewInterviewer(rtcpeer.InterviewerConfig{
		Position: session.Position{Title: "SRE", Competencies: []session.Competency{
			{Name: "Go", Weight: 2}, {Name: "Incident response", Weight: 1, Description: "on-call and postmortems"},
		}},
		Questions:       3,
		OnEvent:         rec.add,
		LateTranscripts: true,
	})
	browser, err := rtcpeertest.NewBrowser(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer browser.Close()
	if err := realtime.CheckOffer(browser.Offer()); err != nil {
		t.Fatalf("the test browser's offer fails the check: %v", err)
	}
	peer, err := rtcpeer.Answer(ctx, browser.Offer(), rtcpeer.Config{LoopbackOnly: true, OnOpen: iv.Open, OnMessage: iv.Message})
	if err != nil {
		t.Fatal(err)
	}
	defer peer.Close()
	if !strings.Contains(peer.AnswerSDP(), "127.0.0.1") || !strings.Contains(peer.AnswerSDP(), "a=setup:active") {
		t.Errorf("answer lacks a loopback candidate or setup:active:\n%s", peer.AnswerSDP())
	}
	if err := browser.Accept(peer.AnswerSDP()); err != nil {
		t.Fatal(err)
	}
	if err := browser.WaitConnected(ctx); err != nil {
		t.Fatal(err)
	}
	if err := browser.WaitOpen(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := browser.WaitEvent(ctx, realtime.EventSessionCreated, 1); err != nil {
		t.Fatal(err)
	}
	first, err := browser.WaitEvent(ctx, realtime.EventOutputAudioTransDone, 1)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(first.Transcript, "SRE") || !strings.Contains(first.Transcript, "Go") {
		t.Errorf("greeting = %q, want the title and the heaviest competency", first.Transcript)
	}

	answers := []string{"I write Go daily.", "   ", "I lead postmortems."}
	for i, a := range answers {
		if err := browser.SayText(a); err != nil {
			t.Fatal(err)
		}
		if _, err := browser.WaitEvent(ctx, realtime.EventResponseDone, i+2); err != nil {
			t.Fatal(err)
		}
	}
	select {
	case <-iv.Done():
	case <-ctx.Done():
		t.Fatal("interviewer not done after its last question")
	}
	if _, err := browser.WaitEvent(ctx, realtime.EventInputTransFail, 1); err != nil {
		t.Fatalf("a blank answer should fail transcription: %v", err)
	}
	// A client event the interviewer does not know gets an error event.
	if err := browser.Send(map[string]string{"type": "bogus.event"}); err != nil {
		t.Fatal(err)
	}
	if _, err := browser.WaitEvent(ctx, realtime.EventError, 1); err != nil {
		t.Fatal(err)
	}

	// The server-side copy is what the browser got.
	if got, want := len(rec.types()), len(browser.Events()); got != want {
		t.Errorf("server-side copy has %d events, the browser got %d", got, want)
	}
	// The second answer's transcription arrives after the reply to it.
	ts := rec.types()
	commits := 0
	replied, late := false, false
	for _, s := range ts {
		switch {
		case strings.HasPrefix(s, realtime.EventInputCommitted+" "):
			commits++
		case commits == 2 && strings.HasPrefix(s, realtime.EventResponseDone+" "):
			replied = true
		case commits == 2 && strings.HasPrefix(s, realtime.EventInputTransFail+" "):
			late = replied
		}
	}
	if !late {
		t.Errorf("the second answer's transcription did not come after the reply: %q", ts)
	}

	// The browser hangs up: the peer notices.
	if err := browser.Close(); err != nil {
		t.Fatal(err)
	}
	select {
	case <-peer.Done():
	case <-ctx.Done():
		t.Fatal("peer did not notice the hang-up")
	}
}
