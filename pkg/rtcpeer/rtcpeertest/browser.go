// Package rtcpeertest is a WebRTC client for tests that stands in for a
// candidate's browser: a pion peer that offers an audio track (sending
// Opus silence) and the "oai-events" data channel, on loopback only, and
// records every event it receives.
package rtcpeertest

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"sync"
	"time"

	"github.com/pion/ice/v4"
	"github.com/pion/webrtc/v4"
	"github.com/pion/webrtc/v4/pkg/media"

	"github.com/interviewvm/controlplane/pkg/realtime"
	"github.com/interviewvm/controlplane/pkg/rtcpeer"
)

// opusSilence is one 20 ms Opus frame of silence.
func opusSilence() []byte { return []byte{0xf8, 0xff, 0xfe} }

// Browser is the offering peer. Create it with NewBrowser and Close it.
type Browser struct {
	pc    *webrtc.PeerConnection
	dc    *webrtc.DataChannel
	track *webrtc.TrackLocalStaticSample
	offer string

	stop chan struct{}
	wg   sync.WaitGroup

	mu        sync.Mutex
	events    []realtime.Event
	open      bool
	connected bool
	closed    bool // the connection or the channel ended
	changed   chan struct{}
	closeOnce sync.Once
}

// NewBrowser creates the peer and its offer (complete with candidates).
func NewBrowser(ctx context.Context) (*Browser, error) {
	var se webrtc.SettingEngine
	se.SetNetworkTypes([]webrtc.NetworkType{webrtc.NetworkTypeUDP4})
	se.SetIncludeLoopbackCandidate(true)
	se.SetIPFilter(func(ip net.IP) bool { return ip.IsLoopback() && ip.To4() != nil })
	se.SetICEMulticastDNSMode(ice.MulticastDNSModeDisabled)
	se.SetICETimeouts(time.Second, 3*time.Second, 300*time.Millisecond)
	var me webrtc.MediaEngine
	if err := me.RegisterDefaultCodecs(); err != nil {
		return nil, fmt.Errorf("register codecs: %w", err)
	}
	api := webrtc.NewAPI(webrtc.WithSettingEngine(se), webrtc.WithMediaEngine(&me))
	pc, err := api.NewPeerConnection(webrtc.Configuration{})
	if err != nil {
		return nil, fmt.Errorf("create peer connection: %w", err)
	}
	b := &Browser{pc: pc, stop: make(chan struct{}), changed: make(chan struct{})}
	fail := func(what string, err error) (*Browser, error) {
		_ = pc.Close()
		return nil, fmt.Errorf("%s: %w", what, err)
	}
	b.track, err = webrtc.NewTrackLocalStaticSample(webrtc.RTPCodecCapability{MimeType: webrtc.MimeTypeOpus, ClockRate: 48000, Channels: 2}, "audio", "browser")
	if err != nil {
		return fail("create audio track", err)
	}
	if _, err := pc.AddTrack(b.track); err != nil {
		return fail("add audio track", err)
	}
	b.dc, err = pc.CreateDataChannel(rtcpeer.DataChannelLabel, nil)
	if err != nil {
		return fail("create data channel", err)
	}
	b.dc.OnOpen(func() { b.set(func() { b.open = true }) })
	b.dc.OnClose(func() { b.set(func() { b.closed = true }) })
	b.dc.OnMessage(func(m webrtc.DataChannelMessage) {
		ev, err := realtime.ParseEvent(m.Data)
		if err != nil {
			return
		}
		b.set(func() { b.events = append(b.events, ev) })
	})
	pc.OnConnectionStateChange(func(s webrtc.PeerConnectionState) {
		switch s {
		case webrtc.PeerConnectionStateConnected:
			b.set(func() { b.connected = true })
		case webrtc.PeerConnectionStateFailed, webrtc.PeerConnectionStateClosed:
			b.set(func() { b.closed = true })
		}
	})
	offer, err := pc.CreateOffer(nil)
	if err != nil {
		return fail("create offer", err)
	}
	gathered := webrtc.GatheringCompletePromise(pc)
	if err := pc.SetLocalDescription(offer); err != nil {
		return fail("apply offer", err)
	}
	select {
	case <-gathered:
	case <-ctx.Done():
		return fail("gather candidates", ctx.Err())
	}
	b.offer = pc.LocalDescription().SDP
	return b, nil
}

// set changes the state under the lock and wakes waiters.
func (b *Browser) set(f func()) {
	b.mu.Lock()
	f()
	close(b.changed)
	b.changed = make(chan struct{})
	b.mu.Unlock()
}

// Offer returns the SDP offer.
func (b *Browser) Offer() string { return b.offer }

// Accept applies the answer and starts sending silence once connected.
func (b *Browser) Accept(answer string) error {
	if err := b.pc.SetRemoteDescription(webrtc.SessionDescription{Type: webrtc.SDPTypeAnswer, SDP: answer}); err != nil {
		return fmt.Errorf("apply answer: %w", err)
	}
	b.wg.Go(func() { // owned: ends on Close
		t := time.NewTicker(20 * time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-b.stop:
				return
			case <-t.C:
				_ = b.track.WriteSample(media.Sample{Data: opusSilence(), Duration: 20 * time.Millisecond})
			}
		}
	})
	return nil
}

// wait waits until cond (called with b.mu held) holds.
func (b *Browser) wait(ctx context.Context, what string, cond func() bool) error {
	for {
		b.mu.Lock()
		ok, changed := cond(), b.changed
		b.mu.Unlock()
		if ok {
			return nil
		}
		select {
		case <-changed:
		case <-ctx.Done():
			return fmt.Errorf("wait for %s: %w", what, ctx.Err())
		}
	}
}

// WaitConnected waits for ICE and DTLS to connect.
func (b *Browser) WaitConnected(ctx context.Context) error {
	return b.wait(ctx, "connection", func() bool { return b.connected })
}

// WaitOpen waits for the events channel to open.
func (b *Browser) WaitOpen(ctx context.Context) error {
	return b.wait(ctx, "events channel", func() bool { return b.open })
}

// WaitClosed waits for the connection or the events channel to end.
func (b *Browser) WaitClosed(ctx context.Context) error {
	return b.wait(ctx, "hang-up", func() bool { return b.closed })
}

// WaitEvent waits for the n-th (1-based) received event of type typ and
// returns it.
func (b *Browser) WaitEvent(ctx context.Context, typ string, n int) (realtime.Event, error) {
	var found realtime.Event
	err := b.wait(ctx, fmt.Sprintf("event %s #%d", typ, n), func() bool {
		seen := 0
		for _, ev := range b.events {
			if ev.Type == typ {
				seen++
				if seen == n {
					found = ev
					return true
				}
			}
		}
		return false
	})
	return found, err
}

// Events returns every event received so far.
func (b *Browser) Events() []realtime.Event {
	b.mu.Lock()
	defer b.mu.Unlock()
	return append([]realtime.Event(nil), b.events...)
}

// Send sends one client event on the events channel.
func (b *Browser) Send(v any) error {
	data, err := json.Marshal(v)
	if err != nil {
		return fmt.Errorf("encode event: %w", err)
	}
	if err := b.dc.SendText(string(data)); err != nil {
		return fmt.Errorf("send event: %w", err)
	}
	return nil
}

// SayText sends the candidate's answer as a conversation.item.create with
// an input_text user message.
func (b *Browser) SayText(text string) error {
	return b.Send(realtime.Event{
		Type: realtime.EventConversationItemCreate,
		Item: &realtime.Item{Type: realtime.ItemMessage, Role: realtime.RoleUser,
			Content: []realtime.Content{{Type: realtime.ContentInputText, Text: text}}},
	})
}

// Close hangs up and waits for the peer's goroutines.
func (b *Browser) Close() error {
	var err error
	b.closeOnce.Do(func() {
		close(b.stop)
		b.wg.Wait()
		if cerr := b.pc.GracefulClose(); cerr != nil {
			err = fmt.Errorf("close peer connection: %w", cerr)
		}
	})
	return err
}
