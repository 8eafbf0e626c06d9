// Package rtcpeer is the simulated interviewer's side of a WebRTC call: a
// pion answering peer (Peer) that takes a browser's SDP offer, connects
// over ICE without STUN or TURN, accepts and discards the browser's audio,
// and exchanges JSON events on the "oai-events" data channel; and the
// Interviewer, which speaks OpenAI's GA Realtime event schema on that
// channel, asking questions built from the position's weighted
// competencies.
package rtcpeer

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"time"

	"github.com/pion/ice/v4"
	"github.com/pion/webrtc/v4"
)

// DataChannelLabel is the label of the events data channel browsers create
// for the Realtime API.
const DataChannelLabel = "oai-events"

// Defaults of Config.
const (
	DefaultDisconnectedTimeout = 5 * time.Second
	DefaultFailedTimeout       = 10 * time.Second
	DefaultKeepAlive           = 2 * time.Second
	// drainTimeout bounds how long Close waits for queued messages to
	// leave before closing the connection.
	drainTimeout = time.Second
)

// ErrNotOpen is returned by Send before the data channel opens and after
// it closes.
var ErrNotOpen = errors.New("events data channel is not open")

// Sender sends one JSON event to the browser.
type Sender interface {
	Send(v any) error
}

// Config configures a Peer.
type Config struct {
	// Logger receives connection state changes; nil discards them.
	Logger *slog.Logger
	// LoopbackOnly restricts ICE to IPv4 loopback host candidates and
	// turns mDNS off: for tests and one-host setups. Otherwise the peer
	// gathers IPv4 host candidates on every interface, loopback included,
	// and resolves the browser's mDNS (.local) candidates.
	LoopbackOnly bool
	// Label is the events data channel's label. Default DataChannelLabel;
	// channels with other labels are ignored.
	Label string
	// OnOpen is called once the events data channel is open.
	OnOpen func(Sender)
	// OnMessage is called with each text message of the events channel, in
	// order, from one goroutine at a time.
	OnMessage func(s Sender, data []byte)
	// ICE timeouts: the connection is declared lost FailedTimeout after
	// the browser stops answering. Defaults 5 s, 10 s and 2 s.
	DisconnectedTimeout time.Duration
	FailedTimeout       time.Duration
	KeepAlive           time.Duration
}

// Peer is one answered call. It ends when the browser hangs up, ICE fails,
// the events channel closes, or Close is called.
type Peer struct {
	pc     *webrtc.PeerConnection
	log    *slog.Logger
	label  string
	answer string

	mu     sync.Mutex
	dc     *webrtc.DataChannel
	closed bool
	// readers counts the goroutines discarding incoming audio.
	readers sync.WaitGroup

	done      chan struct{}
	doneOnce  sync.Once
	closeOnce sync.Once
	closeErr  error
}

// Answer answers a browser's SDP offer. It waits for ICE gathering to
// finish, so the answer carries every candidate (no trickle), and returns
// once the answer is ready; the connection then proceeds on its own.
func Answer(ctx context.Context, offer string, cfg Config) (*Peer, error) {
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	label := cfg.Label
	if label == "" {
		label = DataChannelLabel
	}
	api, err := newAPI(cfg)
	if err != nil {
		return nil, err
	}
	pc, err := api.NewPeerConnection(webrtc.Configuration{})
	if err != nil {
		return nil, fmt.Errorf("create peer connection: %w", err)
	}
	p := &Peer{pc: pc, log: log, label: label, done: make(chan struct{})}

	pc.OnConnectionStateChange(func(s webrtc.PeerConnectionState) {
		p.log.Debug("peer connection state", "state", s.String())
		switch s {
		case webrtc.PeerConnectionStateFailed:
			p.finish("ICE failed")
		case webrtc.PeerConnectionStateClosed:
			p.finish("connection closed")
		}
	})
	pc.OnTrack(func(track *webrtc.TrackRemote, _ *webrtc.RTPReceiver) {
		p.discard(track)
	})
	pc.OnDataChannel(func(dc *webrtc.DataChannel) {
		if dc.Label() != p.label {
			p.log.Debug("ignoring data channel", "label", dc.Label())
			return
		}
		p.mu.Lock()
		p.dc = dc
		p.mu.Unlock()
		dc.OnOpen(func() {
			p.log.Debug("events channel open")
			if cfg.OnOpen != nil {
				cfg.OnOpen(p)
			}
		})
		dc.OnMessage(func(m webrtc.DataChannelMessage) {
			if !m.IsString {
				return
			}
			if cfg.OnMessage != nil {
				cfg.OnMessage(p, m.Data)
			}
		})
		dc.OnClose(func() { p.finish("events channel closed") })
	})

	fail := func(what string, err error) (*Peer, error) {
		_ = pc.Close()
		return nil, fmt.Errorf("%s: %w", what, err)
	}
	if err := pc.SetRemoteDescription(webrtc.SessionDescription{Type: webrtc.SDPTypeOffer, SDP: offer}); err != nil {
		return fail("apply offer", err)
	}
	gathered := webrtc.GatheringCompletePromise(pc)
	answer, err := pc.CreateAnswer(nil)
	if err != nil {
		return fail("create answer", err)
	}
	if err := pc.SetLocalDescription(answer); err != nil {
		return fail("apply answer", err)
	}
	select {
	case <-gathered:
	case <-ctx.Done():
		return fail("gather ICE candidates", ctx.Err())
	}
	p.answer = pc.LocalDescription().SDP
	return p, nil
}

// newAPI builds a pion API with default codecs and the ICE settings of cfg.
func newAPI(cfg Config) (*webrtc.API, error) {
	var se webrtc.SettingEngine
	se.SetNetworkTypes([]webrtc.NetworkType{webrtc.NetworkTypeUDP4})
	se.SetIncludeLoopbackCandidate(true)
	if cfg.LoopbackOnly {
		se.SetIPFilter(func(ip net.IP) bool { return ip.IsLoopback() && ip.To4() != nil })
		se.SetICEMulticastDNSMode(ice.MulticastDNSModeDisabled)
	}
	se.SetICETimeouts(
		orDefault(cfg.DisconnectedTimeout, DefaultDisconnectedTimeout),
		orDefault(cfg.FailedTimeout, DefaultFailedTimeout),
		orDefault(cfg.KeepAlive, DefaultKeepAlive),
	)
	var me webrtc.MediaEngine
	if err := me.RegisterDefaultCodecs(); err != nil {
		return nil, fmt.Errorf("register codecs: %w", err)
	}
	return webrtc.NewAPI(webrtc.WithSettingEngine(se), webrtc.WithMediaEngine(&me)), nil
}

func orDefault(d, def time.Duration) time.Duration {
	if d > 0 {
		return d
	}
	return def
}

// discard reads and drops the browser's audio until the track ends.
func (p *Peer) discard(track *webrtc.TrackRemote) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return
	}
	p.log.Debug("discarding incoming track", "kind", track.Kind().String(), "codec", track.Codec().MimeType)
	p.readers.Go(func() { // owned: ends when the track ends (Close stops it)
		buf := make([]byte, 1500)
		for {
			if _, _, err := track.Read(buf); err != nil {
				return
			}
		}
	})
}

// finish marks the call as over.
func (p *Peer) finish(why string) {
	p.doneOnce.Do(func() {
		p.log.Debug("call over", "why", why)
		close(p.done)
	})
}

// AnswerSDP returns the SDP answer, with all ICE candidates.
func (p *Peer) AnswerSDP() string { return p.answer }

// Done is closed when the call is over: the browser hung up, ICE failed,
// the events channel closed, or Close was called.
func (p *Peer) Done() <-chan struct{} { return p.done }

// Send sends v as one JSON text message on the events channel.
func (p *Peer) Send(v any) error {
	data, err := json.Marshal(v)
	if err != nil {
		return fmt.Errorf("encode event: %w", err)
	}
	p.mu.Lock()
	dc := p.dc
	p.mu.Unlock()
	if dc == nil || dc.ReadyState() != webrtc.DataChannelStateOpen {
		return ErrNotOpen
	}
	if err := dc.SendText(string(data)); err != nil {
		return fmt.Errorf("send event: %w", err)
	}
	return nil
}

// Close hangs up: it lets queued messages leave (for at most a second),
// closes the connection and waits for the peer's goroutines. It must not
// be called from an OnOpen or OnMessage callback. It is idempotent.
func (p *Peer) Close() error {
	p.closeOnce.Do(func() {
		p.mu.Lock()
		dc := p.dc
		p.mu.Unlock()
		if dc != nil {
			deadline := time.Now().Add(drainTimeout)
			for dc.ReadyState() == webrtc.DataChannelStateOpen && dc.BufferedAmount() > 0 && time.Now().Before(deadline) {
				time.Sleep(10 * time.Millisecond)
			}
		}
		p.finish("closed")
		if err := p.pc.GracefulClose(); err != nil {
			p.closeErr = fmt.Errorf("close peer connection: %w", err)
		}
		p.mu.Lock()
		p.closed = true
		p.mu.Unlock()
		p.readers.Wait()
	})
	return p.closeErr
}
