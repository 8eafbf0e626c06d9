package openaitest

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"slices"
	"sync"
	"time"

	"github.com/coder/websocket"

	"github.com/interviewvm/controlplane/pkg/realtime"
	"github.com/interviewvm/controlplane/pkg/rtcpeer"
)

// Sources of client events.
const (
	SourceEventsChannel = "events_channel"
	SourceSideband      = "sideband"
)

// call is one WebRTC call and its sidebands.
type call struct {
	s      *Server
	id     string
	secret bool
	offer  string
	peer   *rtcpeer.Peer

	mu        sync.Mutex
	session   json.RawMessage
	sessID    string
	sb        *websocket.Conn // the attached sideband, if any
	outage    bool            // between DropSideband and AwaitSideband
	sidebands int
	dcOpen    bool
	events    []ClientEvent
	consumed  map[string]int // client events of each type used by AwaitClient
	items     map[string]realtime.Item
	hungUp    bool
	ended     bool
	news      chan struct{} // closed and replaced on every change
	done      chan struct{} // closed when the call ends
	endOnce   sync.Once
}

// newCall answers an offer with a loopback pion peer and starts the call's
// goroutines.
func (s *Server) newCall(ctx context.Context, offer string, sess json.RawMessage, secret bool) (*call, error) {
	c := &call{
		s: s, id: newID("rtc_"), secret: secret, offer: offer, session: sess, sessID: newID("sess_"),
		consumed: make(map[string]int), items: make(map[string]realtime.Item),
		news: make(chan struct{}), done: make(chan struct{}),
	}
	peer, err := rtcpeer.Answer(ctx, offer, rtcpeer.Config{
		Logger:              s.log.With("call_id", c.id),
		LoopbackOnly:        true,
		OnOpen:              c.onOpen,
		OnMessage:           c.onMessage,
		DisconnectedTimeout: time.Second,
		FailedTimeout:       3 * time.Second,
		KeepAlive:           300 * time.Millisecond,
	})
	if err != nil {
		return nil, err
	}
	c.peer = peer
	s.mu.Lock()
	s.calls[c.id] = c
	s.order = append(s.order, c.id)
	s.mu.Unlock()
	s.notify()
	s.wg.Go(c.watch)
	s.wg.Go(c.play)
	return c, nil
}

// watch ends the call when the peer goes away, the call runs too long, or
// the fake closes.
func (c *call) watch() {
	t := time.NewTimer(c.s.cfg.MaxCallDuration)
	defer t.Stop()
	select {
	case <-c.peer.Done():
	case <-t.C:
	case <-c.s.ctx.Done():
	case <-c.done:
	}
	c.end(false)
}

// end ends the call once: the sideband gets a normal closure and the peer
// connection is closed.
func (c *call) end(hungUp bool) {
	c.endOnce.Do(func() {
		c.mu.Lock()
		c.ended, c.hungUp = true, hungUp
		sb := c.sb
		c.sb = nil
		close(c.done)
		c.changedLocked()
		c.mu.Unlock()
		if sb != nil {
			// The close handshake waits for the client to read; do not
			// hold the hang-up's answer for it.
			c.s.wg.Go(func() { _ = sb.Close(websocket.StatusNormalClosure, "call ended") })
		}
		_ = c.peer.Close()
		c.s.notify()
	})
}

func (c *call) isEnded() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.ended
}

// changedLocked wakes the script; c.mu is held.
func (c *call) changedLocked() {
	close(c.news)
	c.news = make(chan struct{})
}

func (c *call) info() CallInfo {
	c.mu.Lock()
	defer c.mu.Unlock()
	return CallInfo{
		ID: c.id, Session: c.session, Secret: c.secret, Offer: c.offer,
		ClientEvents: slices.Clone(c.events), Sidebands: c.sidebands, HungUp: c.hungUp, Ended: c.ended,
	}
}

// sessionCreated is the event a new connection to the session gets.
func (c *call) sessionCreated() realtime.Event {
	c.mu.Lock()
	defer c.mu.Unlock()
	b, _ := json.Marshal(sessionObject(c.session, c.sessID))
	return realtime.Event{Type: realtime.EventSessionCreated, EventID: newID("event_"), Session: b}
}

// onOpen is the peer's OnOpen: the events channel is open.
func (c *call) onOpen(s rtcpeer.Sender) {
	_ = s.Send(c.sessionCreated())
	c.mu.Lock()
	c.dcOpen = true
	c.changedLocked()
	c.mu.Unlock()
	c.s.notify()
}

// onMessage is the peer's OnMessage: a client event on the events channel.
func (c *call) onMessage(_ rtcpeer.Sender, data []byte) {
	c.client(SourceEventsChannel, data, func(ev realtime.Event) { _ = c.peer.Send(ev) })
}

// serveSideband runs one sideband connection until it ends.
func (c *call) serveSideband(conn *websocket.Conn) {
	c.mu.Lock()
	if c.ended {
		c.mu.Unlock()
		_ = conn.Close(websocket.StatusNormalClosure, "call ended")
		return
	}
	if c.outage {
		// The outage began during the handshake: the connection dies.
		c.mu.Unlock()
		_ = conn.CloseNow()
		return
	}
	old := c.sb
	c.sb = conn
	c.sidebands++
	c.mu.Unlock()
	if old != nil {
		_ = old.CloseNow()
	}
	c.write(conn, c.sessionCreated())
	c.mu.Lock()
	c.changedLocked()
	c.mu.Unlock()
	c.s.notify()

	for {
		typ, data, err := conn.Read(c.s.ctx)
		if err != nil {
			break
		}
		if typ == websocket.MessageText {
			c.client(SourceSideband, data, func(ev realtime.Event) { c.write(conn, ev) })
		}
	}
	c.mu.Lock()
	if c.sb == conn {
		c.sb = nil
	}
	c.changedLocked()
	c.mu.Unlock()
	_ = conn.CloseNow()
	c.s.notify()
}

// write sends one event on a sideband; failures are the sideband's end.
func (c *call) write(conn *websocket.Conn, ev realtime.Event) {
	ctx, cancel := context.WithTimeout(c.s.ctx, 5*time.Second)
	defer cancel()
	_ = conn.Write(ctx, websocket.MessageText, encode(ev))
}

// client records a client event and answers what the fake answers:
// session.update and conversation.item.retrieve. reply sends to the
// connection the event came from.
func (c *call) client(source string, data []byte, reply func(realtime.Event)) {
	ev, err := realtime.ParseEvent(data)
	if err != nil || ev.Type == "" {
		reply(realtime.Event{Type: realtime.EventError, EventID: newID("event_"), Error: &realtime.ErrorDetail{
			Type: realtime.TypeInvalidRequest, Code: realtime.CodeInvalidClientEv, Message: "The message is not a JSON event with a type.",
		}})
		return
	}
	c.mu.Lock()
	c.events = append(c.events, ClientEvent{Source: source, Type: ev.Type, Raw: append(json.RawMessage(nil), data...)})
	c.changedLocked()
	c.mu.Unlock()
	c.s.notify()

	switch ev.Type {
	case realtime.EventSessionUpdate:
		if apiErr := c.update(ev.Session); apiErr != nil {
			reply(realtime.Event{Type: realtime.EventError, EventID: newID("event_"), Error: &realtime.ErrorDetail{
				Type: apiErr.typ, Code: apiErr.code, Param: apiErr.param, Message: apiErr.message, EventID: ev.EventID,
			}})
			return
		}
		c.mu.Lock()
		b, _ := json.Marshal(sessionObject(c.session, c.sessID))
		c.mu.Unlock()
		c.emit(realtime.Event{Type: realtime.EventSessionUpdated, Session: b})
	case realtime.EventItemRetrieve:
		c.mu.Lock()
		it, ok := c.items[ev.ItemID]
		c.mu.Unlock()
		if !ok {
			reply(realtime.Event{Type: realtime.EventError, EventID: newID("event_"), Error: &realtime.ErrorDetail{
				Type: realtime.TypeInvalidRequest, Code: "item_not_found", Param: "item_id",
				Message: fmt.Sprintf("Item with item_id '%s' not found.", ev.ItemID), EventID: ev.EventID,
			}})
			return
		}
		reply(realtime.Event{Type: realtime.EventItemRetrieved, EventID: newID("event_"), Item: &it})
	}
}

// update merges a session.update's session into the call's session.
func (c *call) update(raw json.RawMessage) *apiError {
	if apiErr := checkSession(raw, false); apiErr != nil {
		return apiErr
	}
	var upd map[string]json.RawMessage
	_ = json.Unmarshal(raw, &upd)
	c.mu.Lock()
	defer c.mu.Unlock()
	cur := map[string]json.RawMessage{}
	_ = json.Unmarshal(c.session, &cur)
	maps.Copy(cur, upd)
	c.session, _ = json.Marshal(cur)
	return nil
}

// emit sends a server event to the events channel and the sideband, and
// remembers the conversation's items for conversation.item.retrieve.
func (c *call) emit(ev realtime.Event) {
	if ev.EventID == "" {
		ev.EventID = newID("event_")
	}
	c.mu.Lock()
	c.remember(ev)
	sb := c.sb
	c.mu.Unlock()
	if err := c.peer.Send(ev); err != nil && !errors.Is(err, rtcpeer.ErrNotOpen) {
		c.s.log.Debug("event not sent on the events channel", "call_id", c.id, "error", err)
	}
	if sb != nil {
		c.write(sb, ev)
	}
}

// remember updates the item memory from a server event; c.mu is held.
func (c *call) remember(ev realtime.Event) {
	setTranscript := func(id, text string) {
		it, ok := c.items[id]
		if !ok {
			return
		}
		it.Content = slices.Clone(it.Content)
		if len(it.Content) == 0 {
			it.Content = []realtime.Content{{Type: realtime.ContentOutputAudio}}
		}
		it.Content[0].Transcript = &text
		c.items[id] = it
	}
	switch ev.Type {
	case realtime.EventItemAdded, realtime.EventItemDone:
		if ev.Item != nil {
			it := *ev.Item
			if old, ok := c.items[it.ID]; ok && len(it.Content) > 0 && len(old.Content) > 0 &&
				it.Content[0].Transcript == nil && old.Content[0].Transcript != nil {
				it.Content = slices.Clone(it.Content)
				it.Content[0].Transcript = old.Content[0].Transcript
			}
			c.items[it.ID] = it
		}
	case realtime.EventInputTransDone, realtime.EventOutputAudioTransDone:
		setTranscript(ev.ItemID, ev.Transcript)
	}
}

// play runs the script once the events channel is open and a sideband is
// attached.
func (c *call) play() {
	if !c.waitFor(func() bool { return c.dcOpen && c.sb != nil }) {
		return
	}
	for _, st := range c.s.cfg.Script {
		if !c.step(st) {
			return
		}
	}
}

// step runs one step; false means the call ended.
func (c *call) step(st Step) bool {
	switch {
	case st.Event != nil:
		c.emit(*st.Event)
	case st.AwaitClient != "":
		typ := st.AwaitClient
		if !c.waitFor(func() bool {
			n := 0
			for _, e := range c.events {
				if e.Type == typ {
					n++
				}
			}
			return n > c.consumed[typ]
		}) {
			return false
		}
		c.mu.Lock()
		c.consumed[typ]++
		c.mu.Unlock()
	case st.Pause > 0:
		t := time.NewTimer(st.Pause)
		defer t.Stop()
		select {
		case <-t.C:
		case <-c.done:
			return false
		}
	case st.DropSideband:
		c.mu.Lock()
		sb := c.sb
		c.sb = nil
		c.outage = true
		c.changedLocked()
		c.mu.Unlock()
		if sb != nil {
			_ = sb.CloseNow()
		}
	case st.AwaitSideband:
		c.mu.Lock()
		c.outage = false
		c.changedLocked()
		c.mu.Unlock()
		return c.waitFor(func() bool { return c.sb != nil })
	case st.HangUp:
		c.end(false)
		return false
	}
	return !c.isEnded()
}

// waitFor waits until cond (called with c.mu held) holds; false when the
// call ended first.
func (c *call) waitFor(cond func() bool) bool {
	for {
		c.mu.Lock()
		ok, ended, news := cond(), c.ended, c.news
		c.mu.Unlock()
		switch {
		case ok:
			return true
		case ended:
			return false
		}
		select {
		case <-news:
		case <-c.done:
		}
	}
}

// unreachable reports whether the sideband is in a scripted outage.
func (c *call) unreachable() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.outage
}
