package sessionvm

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/interviewvm/controlplane/pkg/realtime"
	"github.com/interviewvm/controlplane/pkg/rtcpeer"
	"github.com/interviewvm/controlplane/pkg/session"
)

// States of the VM's event source, reported in heartbeats.
const (
	sidebandNone         = "none"
	sidebandConnecting   = "connecting"
	sidebandOpen         = "open"
	sidebandReconnecting = "reconnecting"
	sidebandClosed       = "closed"
)

// Timing of the brokers.
const (
	// dialTimeout bounds attaching the sideband.
	dialTimeout = 10 * time.Second
	// reconnectBudget bounds how long a broken sideband is re-dialled
	// before the interview ends.
	reconnectBudget = 30 * time.Second
	reconnectMin    = 250 * time.Millisecond
	reconnectMax    = 4 * time.Second
	// writeTimeout bounds one sideband write.
	writeTimeout = 5 * time.Second
)

// broker connects the browser with the interviewer and hands every server
// event of the call to the VM. One call per interview: once a call is
// live, another offer is a conflict.
type broker interface {
	// offer answers the browser's SDP offer.
	offer(ctx context.Context, sdp string) (string, error)
	// token mints an ephemeral client secret for a browser that connects
	// to the interviewer directly.
	token(ctx context.Context) (tokenAnswer, error)
	// attach follows a call the browser made with a token.
	attach(ctx context.Context, callID string) error
	// state is the event source's state, for heartbeats.
	state() string
	// close hangs the call up and stops the broker's goroutines; no event
	// arrives after it returns.
	close(ctx context.Context)
}

// tokenAnswer is the answer of POST /session/token.
type tokenAnswer struct {
	Value     string    `json:"value"`
	ExpiresAt time.Time `json:"expires_at"`
	Model     string    `json:"model"`
}

// brokerHooks is what a broker needs of the VM.
type brokerHooks struct {
	log *slog.Logger
	// event receives every server event, in order.
	event func(realtime.Event)
	// pending lists the items whose transcript is still awaited.
	pending func() []string
	// placed reports whether the transcript knows an item's place.
	placed func(id string) bool
	// end asks the VM to end the interview.
	end func(endCause)
	// started tells the VM a call began (the idle timeout stops).
	started func()
	// crash, deferred first in every goroutine of the broker, reports a
	// panic as a failed session and exits.
	crash func()
}

// errCallLive is a broker's answer to a second call.
func errCallLive() error {
	return session.Errorf(session.ECONFLICT, "a call is already live for this interview")
}

// errEnded is a broker's answer once the interview has ended.
func errEnded() error { return session.Errorf(session.ECONFLICT, "the interview has ended") }

// callOver is the end cause of a call that ended on its own.
func callOver(why string) endCause {
	return endCause{why: why, reason: session.ReasonCompleted, report: true}
}

// simulatedBroker answers offers itself with the simulated interviewer.
type simulatedBroker struct {
	hooks        brokerHooks
	position     session.Position
	loopbackOnly bool

	mu     sync.Mutex
	busy   bool // an offer is being answered
	peer   *rtcpeer.Peer
	st     string
	closed bool
	stop   chan struct{}
	wg     sync.WaitGroup
}

func newSimulatedBroker(h brokerHooks, pos session.Position) *simulatedBroker {
	return &simulatedBroker{hooks: h, position: pos, st: sidebandNone, stop: make(chan struct{})}
}

func (b *simulatedBroker) offer(ctx context.Context, sdp string) (string, error) {
	b.mu.Lock()
	switch {
	case b.closed:
		b.mu.Unlock()
		return "", errEnded()
	case b.busy || b.peer != nil:
		b.mu.Unlock()
		return "", errCallLive()
	}
	b.busy, b.st = true, sidebandConnecting
	b.mu.Unlock()

	log := b.hooks.log.With("component", "simulated")
	iv := rtcpeer.NewInterviewer(rtcpeer.InterviewerConfig{
		Position: b.position, Logger: log, OnEvent: b.hooks.event, LateTranscripts: true,
	})
	peer, err := rtcpeer.Answer(ctx, sdp, rtcpeer.Config{
		Logger:       log,
		LoopbackOnly: b.loopbackOnly,
		OnOpen: func(s rtcpeer.Sender) {
			b.setState(sidebandOpen)
			iv.Open(s)
		},
		OnMessage: iv.Message,
	})
	b.mu.Lock()
	defer b.mu.Unlock()
	b.busy = false
	if err != nil {
		b.st = sidebandNone
		return "", session.Errorf(session.EINVALID, "the offer cannot be answered: %v", err)
	}
	if b.closed {
		_ = peer.Close()
		return "", errEnded()
	}
	b.peer = peer
	b.wg.Go(func() { // owned: ends on close
		defer b.hooks.crash()
		select {
		case <-peer.Done():
			b.setState(sidebandClosed)
			b.hooks.end(callOver("the call hung up"))
		case <-iv.Done():
			b.hooks.end(callOver("the simulated interviewer finished"))
		case <-b.stop:
		}
	})
	b.hooks.started()
	return peer.AnswerSDP(), nil
}

func (b *simulatedBroker) token(context.Context) (tokenAnswer, error) {
	return tokenAnswer{}, session.Errorf(session.ECONFLICT,
		"the simulated interviewer takes the browser's offer at /session/sdp; tokens need the openai interviewer")
}

func (b *simulatedBroker) attach(context.Context, string) error {
	return session.Errorf(session.ECONFLICT,
		"the simulated interviewer takes the browser's offer at /session/sdp; calls need the openai interviewer")
}

func (b *simulatedBroker) setState(s string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.st != sidebandClosed {
		b.st = s
	}
}

func (b *simulatedBroker) state() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.st
}

func (b *simulatedBroker) close(context.Context) {
	b.mu.Lock()
	if b.closed {
		b.mu.Unlock()
		return
	}
	b.closed = true
	close(b.stop)
	peer := b.peer
	b.mu.Unlock()
	b.wg.Wait()
	if peer != nil {
		if err := peer.Close(); err != nil {
			b.hooks.log.Warn("hang up the simulated call", "error", err)
		}
	}
	b.setState(sidebandClosed)
}

// openaiBroker brokers calls to the OpenAI Realtime API and follows each
// call's events on the sideband.
//
// A sideband that breaks without a close frame (a network fault) is
// re-dialled for up to reconnectBudget: the call itself goes on at OpenAI,
// so ending the interview would cut the candidate off. Events sent while it
// was down are lost; on reconnecting the broker asks for every item whose
// transcript is still awaited (conversation.item.retrieve) so those lines
// settle, and items it never heard of are missing from the transcript. A
// sideband the API closes (with a close frame), or a call it no longer
// knows, means the call is over: the interview ends with the transcript so
// far.
type openaiBroker struct {
	hooks  brokerHooks
	client *realtime.Client
	sess   realtime.SessionConfig

	// ctx bounds the sideband reader; cancelled by close.
	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup

	// asked holds the items retrieved so far; read goroutine only.
	asked map[string]bool

	mu     sync.Mutex
	busy   bool // an offer or attach is in flight
	callID string
	sb     *realtime.Sideband
	st     string
	closed bool
}

func newOpenAIBroker(h brokerHooks, client *realtime.Client, sess realtime.SessionConfig) *openaiBroker {
	ctx, cancel := context.WithCancel(context.Background())
	return &openaiBroker{
		hooks: h, client: client, sess: sess, ctx: ctx, cancel: cancel,
		asked: make(map[string]bool), st: sidebandNone,
	}
}

// reserve marks a call as in the making, or says why none may start.
func (b *openaiBroker) reserve() error {
	b.mu.Lock()
	defer b.mu.Unlock()
	switch {
	case b.closed:
		return errEnded()
	case b.busy || b.callID != "":
		return errCallLive()
	}
	b.busy, b.st = true, sidebandConnecting
	return nil
}

func (b *openaiBroker) offer(ctx context.Context, sdp string) (string, error) {
	if err := b.reserve(); err != nil {
		return "", err
	}
	call, err := b.client.CreateCall(ctx, sdp, b.sess)
	if err != nil {
		b.release()
		b.hooks.log.Warn("create realtime call failed", "error", err)
		return "", apiErrorForBrowser(err)
	}
	b.hooks.log.Info("realtime call created", "call_id", call.ID)
	if err := b.follow(ctx, call.ID); err != nil {
		hctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), hangupTimeout)
		defer cancel()
		b.hangup(hctx, call.ID)
		return "", err
	}
	return call.AnswerSDP, nil
}

// validCallID reports whether id looks like a realtime call id: rtc_
// followed by letters, digits and underscores.
func validCallID(id string) bool {
	rest, ok := strings.CutPrefix(id, "rtc_")
	if !ok || rest == "" || len(rest) > 128 {
		return false
	}
	for _, r := range rest {
		switch {
		case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r >= '0' && r <= '9', r == '_':
		default:
			return false
		}
	}
	return true
}

func (b *openaiBroker) attach(ctx context.Context, callID string) error {
	if !validCallID(callID) {
		return session.Errorf(session.EINVALID, "call_id must look like rtc_…")
	}
	if err := b.reserve(); err != nil {
		return err
	}
	return b.follow(ctx, callID)
}

// follow attaches the sideband to a reserved call and starts reading it.
func (b *openaiBroker) follow(ctx context.Context, callID string) error {
	dctx, cancel := context.WithTimeout(ctx, dialTimeout)
	sb, err := b.client.DialSideband(dctx, callID)
	cancel()
	if err != nil {
		b.release()
		b.hooks.log.Warn("attach sideband failed", "call_id", callID, "error", err)
		if realtime.IsAPIError(err, http.StatusNotFound, "") {
			return session.Errorf(session.ENOTFOUND, "the realtime service knows no call %s", callID)
		}
		return session.Errorf(session.EUNAVAILABLE, "the realtime service's event stream is unavailable")
	}
	b.mu.Lock()
	b.busy = false
	if b.closed {
		b.mu.Unlock()
		_ = sb.Close()
		return errEnded()
	}
	b.callID, b.sb, b.st = callID, sb, sidebandOpen
	b.wg.Go(func() { // owned: ends on close
		defer b.hooks.crash()
		b.read(sb)
	})
	b.mu.Unlock()
	b.hooks.log.Info("sideband attached", "call_id", callID)
	b.hooks.started()
	return nil
}

// release undoes reserve after a failure.
func (b *openaiBroker) release() {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.busy, b.st = false, sidebandNone
}

func (b *openaiBroker) token(ctx context.Context) (tokenAnswer, error) {
	b.mu.Lock()
	closed, live := b.closed, b.busy || b.callID != ""
	b.mu.Unlock()
	switch {
	case closed:
		return tokenAnswer{}, errEnded()
	case live:
		return tokenAnswer{}, errCallLive()
	}
	sec, err := b.client.CreateClientSecret(ctx, b.sess, tokenTTL)
	if err != nil {
		b.hooks.log.Warn("create client secret failed", "error", err)
		return tokenAnswer{}, apiErrorForBrowser(err)
	}
	return tokenAnswer{Value: sec.Value, ExpiresAt: sec.ExpiresAt, Model: sec.Model}, nil
}

// read hands the sideband's events to the VM until the call ends,
// reconnecting a broken sideband.
func (b *openaiBroker) read(sb *realtime.Sideband) {
	for {
		ev, err := sb.Read(b.ctx)
		if err == nil {
			b.handle(sb, ev)
			continue
		}
		if b.stopping() {
			return
		}
		if status := realtime.CloseStatus(err); status != -1 {
			b.setState(sidebandClosed)
			b.hooks.log.Info("sideband closed by the realtime service", "call_id", sb.CallID(), "close_status", status)
			b.hooks.end(callOver("the call ended"))
			return
		}
		b.hooks.log.Warn("sideband broke; reconnecting", "call_id", sb.CallID(), "error", err)
		b.setState(sidebandReconnecting)
		next, err := b.reconnect(sb.CallID())
		if err != nil {
			if b.stopping() {
				return
			}
			b.setState(sidebandClosed)
			b.hooks.log.Error("sideband lost", "call_id", sb.CallID(), "error", err)
			b.hooks.end(callOver("the call's event stream was lost"))
			return
		}
		b.mu.Lock()
		b.sb = next
		b.st = sidebandOpen
		b.mu.Unlock()
		sb = next
		b.recover(sb)
	}
}

// reconnect re-dials the sideband with backoff for up to reconnectBudget.
// A call the API no longer knows is over: no more attempts.
func (b *openaiBroker) reconnect(callID string) (*realtime.Sideband, error) {
	ctx, cancel := context.WithTimeout(b.ctx, reconnectBudget)
	defer cancel()
	wait := reconnectMin
	for {
		dctx, dcancel := context.WithTimeout(ctx, dialTimeout)
		sb, err := b.client.DialSideband(dctx, callID)
		dcancel()
		if err == nil {
			b.hooks.log.Info("sideband reattached", "call_id", callID)
			return sb, nil
		}
		if realtime.IsAPIError(err, http.StatusNotFound, "") {
			return nil, err
		}
		t := time.NewTimer(jitter(wait))
		select {
		case <-ctx.Done():
			t.Stop()
			return nil, fmt.Errorf("reattach sideband of call %s: %w (last error: %w)", callID, ctx.Err(), err)
		case <-t.C:
		}
		wait = min(2*wait, reconnectMax)
	}
}

// recover asks for the items whose transcript may have been missed while
// the sideband was down.
func (b *openaiBroker) recover(sb *realtime.Sideband) {
	for _, id := range b.hooks.pending() {
		b.retrieve(sb, id)
	}
}

// retrieve asks for one item (conversation.item.retrieve).
func (b *openaiBroker) retrieve(sb *realtime.Sideband, id string) {
	ctx, cancel := context.WithTimeout(b.ctx, writeTimeout)
	defer cancel()
	b.asked[id] = true
	if err := sb.Send(ctx, map[string]string{"type": realtime.EventItemRetrieve, "item_id": id}); err != nil {
		b.hooks.log.Warn("retrieve an item", "item_id", id, "error", err)
	}
}

// handle passes an event on, retrieves a previous item it names that the
// transcript never saw (events were missed), and guards the session's
// instructions: the browser shares the session and could send
// session.update; the VM puts its own instructions back.
func (b *openaiBroker) handle(sb *realtime.Sideband, ev realtime.Event) {
	b.hooks.event(ev)
	if p := ev.PreviousItemID; p != nil && *p != "" && !b.asked[*p] && !b.hooks.placed(*p) {
		b.hooks.log.Info("an event names an item never seen; retrieving it", "item_id", *p)
		b.retrieve(sb, *p)
	}
	switch ev.Type {
	case realtime.EventError:
		if ev.Error != nil {
			b.hooks.log.Warn("realtime error event", "type", ev.Error.Type, "code", ev.Error.Code, "message", ev.Error.Message)
		}
	case realtime.EventSessionCreated, realtime.EventSessionUpdated:
		ins, ok := ev.SessionInstructions()
		if !ok || ins == b.sess.Instructions {
			return
		}
		b.hooks.log.Warn("session instructions were changed by a client; restoring them", "event", ev.Type)
		ctx, cancel := context.WithTimeout(b.ctx, writeTimeout)
		defer cancel()
		err := sb.Send(ctx, map[string]any{"type": realtime.EventSessionUpdate, "session": realtime.SessionConfig{
			Type: realtime.SessionTypeRealtime, Instructions: b.sess.Instructions,
		}})
		if err != nil {
			b.hooks.log.Warn("restore session instructions", "error", err)
		}
	}
}

func (b *openaiBroker) stopping() bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.closed
}

func (b *openaiBroker) setState(s string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.st = s
}

func (b *openaiBroker) state() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.st
}

// hangup ends a call at the API.
func (b *openaiBroker) hangup(ctx context.Context, callID string) {
	err := b.client.Hangup(ctx, callID)
	switch {
	case err == nil:
		b.hooks.log.Info("realtime call hung up", "call_id", callID)
	case realtime.IsAPIError(err, http.StatusNotFound, ""):
		b.hooks.log.Info("realtime call was already over", "call_id", callID)
	default:
		b.hooks.log.Warn("hang up realtime call", "call_id", callID, "error", err)
	}
}

func (b *openaiBroker) close(ctx context.Context) {
	b.mu.Lock()
	if b.closed {
		b.mu.Unlock()
		return
	}
	b.closed = true
	callID, sb := b.callID, b.sb
	b.mu.Unlock()
	if callID != "" {
		b.hangup(ctx, callID)
	}
	if sb != nil {
		if err := sb.Close(); err != nil {
			b.hooks.log.Debug("close sideband", "error", err)
		}
	}
	b.cancel()
	b.wg.Wait()
	b.setState(sidebandClosed)
	b.client.CloseIdleConnections()
}

// apiErrorForBrowser turns a realtime API failure into what the browser
// may see: a refused offer is the browser's error; anything else is the
// service being unavailable. The server key is never part of it.
func apiErrorForBrowser(err error) error {
	var e *realtime.APIError
	switch {
	case errors.As(err, &e) && e.Code == realtime.CodeInvalidOffer:
		return session.Errorf(session.EINVALID, "the realtime service refused the SDP offer: %s", e.Message)
	case errors.As(err, &e) && e.Status == http.StatusTooManyRequests:
		return session.Errorf(session.ERATELIMITED, "the realtime service is rate limiting; try again shortly")
	case errors.Is(err, context.DeadlineExceeded), errors.Is(err, context.Canceled):
		return session.Errorf(session.EUNAVAILABLE, "the realtime service did not answer in time")
	}
	return session.Errorf(session.EUNAVAILABLE, "the realtime service is unavailable")
}
