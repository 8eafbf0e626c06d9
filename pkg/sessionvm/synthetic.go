package sessionvm

import (
	"context"
	"encoding/json"
	"fmt"
	"sync"
	"time"

	"github.com/interviewvm/controlplane/pkg/rtcpeer"
	"github.com/interviewvm/controlplane/pkg/session"
)

// syntheticQuestions is how many questions a synthetic interview may ask:
// enough that it runs until it is ended.
const syntheticQuestions = 100000

// syntheticBroker runs an interview without a browser or WebRTC, for load,
// chaos and benchmark runs (REALTIME=synthetic): a scripted candidate
// answers the simulated interviewer every turn, so the VM produces a
// steady transcript through exactly the path a real call takes (events →
// assembler → outbox → controller). It takes no offers.
type syntheticBroker struct {
	hooks brokerHooks
	turn  time.Duration

	mu     sync.Mutex
	st     string
	closed bool
	stop   chan struct{}
	wg     sync.WaitGroup
}

// discard is the browser a synthetic interview has none of.
type discard struct{}

func (discard) Send(any) error { return nil }

func newSyntheticBroker(h brokerHooks, pos session.Position, turn time.Duration) *syntheticBroker {
	if turn <= 0 {
		turn = time.Second
	}
	b := &syntheticBroker{hooks: h, turn: turn, st: sidebandOpen, stop: make(chan struct{})}
	iv := rtcpeer.NewInterviewer(rtcpeer.InterviewerConfig{
		Position: pos, Questions: syntheticQuestions, Logger: h.log, OnEvent: h.event, LateTranscripts: true,
	})
	h.started()
	b.wg.Go(func() { // owned: ends on close
		defer h.crash()
		iv.Open(discard{})
		t := time.NewTicker(turn)
		defer t.Stop()
		for n := 1; ; n++ {
			select {
			case <-b.stop:
				return
			case <-iv.Done():
				h.end(callOver("the synthetic interview ran out of questions"))
				return
			case <-t.C:
			}
			msg, _ := json.Marshal(map[string]any{"type": "conversation.item.create", "item": map[string]any{
				"type": "message", "role": "user",
				"content": []map[string]any{{"type": "input_text", "text": fmt.Sprintf("Synthetic answer %d.", n)}},
			}})
			iv.Message(discard{}, msg)
		}
	})
	return b
}

func (b *syntheticBroker) offer(context.Context, string) (string, error) {
	return "", session.Errorf(session.ECONFLICT, "a synthetic interview takes no calls")
}

func (b *syntheticBroker) token(context.Context) (tokenAnswer, error) {
	return tokenAnswer{}, session.Errorf(session.ECONFLICT, "a synthetic interview takes no calls")
}

func (b *syntheticBroker) attach(context.Context, string) error {
	return session.Errorf(session.ECONFLICT, "a synthetic interview takes no calls")
}

func (b *syntheticBroker) state() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.st
}

func (b *syntheticBroker) close(context.Context) {
	b.mu.Lock()
	if b.closed {
		b.mu.Unlock()
		return
	}
	b.closed = true
	close(b.stop)
	b.mu.Unlock()
	b.wg.Wait()
	b.mu.Lock()
	b.st = sidebandClosed
	b.mu.Unlock()
}
