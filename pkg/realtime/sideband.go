package realtime

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"

	"github.com/coder/websocket"
	"github.com/openai/openai-go/v3/option"
	oairt "github.com/openai/openai-go/v3/realtime"
)

// maxEvent bounds one sideband message (session.created carries the whole
// session configuration, instructions included).
const maxEvent = 4 << 20

// maxQueued bounds the server events the SDK's reader keeps for Read: a
// VM that falls this far behind has a sideband that is broken for it.
const maxQueued = 4096

// Sideband is a WebSocket attached to an existing call (the SDK's
// Realtime.Connect with call_id): it receives every server event of the
// call's session and may send client events. Read from one goroutine;
// Send and Close are safe from any.
type Sideband struct {
	conn   *oairt.RealtimeConnection
	callID string
	client *Client
}

// DialSideband attaches to a call: wss://…/v1/realtime?call_id=<id> with the
// server key. An unknown or ended call yields an *APIError with status 404
// and code call_id_not_found.
func (c *Client) DialSideband(ctx context.Context, callID string) (*Sideband, error) {
	if c.baseErr != nil {
		return nil, fmt.Errorf("attach sideband to call %s: %w", callID, c.baseErr)
	}
	// The SDK reports a refused handshake without its status or body;
	// refusal keeps them so the caller can tell a call that is over
	// (404) from a fault.
	refusal := &handshakeRefusal{next: c.http.Transport}
	if refusal.next == nil {
		refusal.next = http.DefaultTransport
	}
	conn, err := c.sdk.Connect(ctx, oairt.RealtimeConnectionOptions{
		MaxMessageBytes: maxEvent, MaxBufferedEvents: maxQueued,
	}, option.WithQuery("call_id", callID), option.WithHTTPClient(&http.Client{Transport: refusal}))
	if err != nil {
		if e := refusal.apiError(); e != nil {
			e.Message = redactKey(e.Message, c.apiKey)
			return nil, fmt.Errorf("attach sideband to call %s: %w", callID, e)
		}
		return nil, fmt.Errorf("attach sideband to call %s: %w", callID, c.apiError(err))
	}
	c.log.Debug("sideband attached", "call_id", callID)
	return &Sideband{conn: conn, callID: callID, client: c}, nil
}

// handshakeRefusal is a round tripper that remembers a WebSocket
// handshake's non-101 answer.
type handshakeRefusal struct {
	next   http.RoundTripper
	status int
	body   []byte
}

// RoundTrip implements http.RoundTripper.
func (h *handshakeRefusal) RoundTrip(req *http.Request) (*http.Response, error) {
	resp, err := h.next.RoundTrip(req)
	if err != nil || resp.StatusCode == http.StatusSwitchingProtocols {
		return resp, err
	}
	data, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
	resp.Body.Close()
	h.status, h.body = resp.StatusCode, data
	resp.Body = io.NopCloser(bytes.NewReader(data))
	return resp, nil
}

// apiError is the refused handshake's *APIError, or nil.
func (h *handshakeRefusal) apiError() *APIError {
	if h.status == 0 {
		return nil
	}
	return parseAPIError(h.status, h.body)
}

// CallID returns the id of the call the sideband is attached to.
func (s *Sideband) CallID() string { return s.callID }

// Read returns the next server event, in the GA schema the control plane
// reads (Event); the SDK's typed union is not needed for that. A message
// that is not a JSON event is logged and skipped. When the socket ends,
// the error tells how: CloseStatus(err) is the close code the server
// sent, or -1 when the connection broke without one. Events that arrived
// before the end are returned first.
func (s *Sideband) Read(ctx context.Context) (Event, error) {
	for {
		data, err := s.conn.RecvRaw(ctx)
		if err != nil {
			if ctx.Err() == nil {
				// The SDK's reader has stopped; release the socket.
				s.conn.Abort()
			}
			return Event{}, fmt.Errorf("read sideband of call %s: %w", s.callID, err)
		}
		ev, err := ParseEvent(data)
		if err != nil || ev.Type == "" {
			s.client.log.Warn("sideband sent a message that is not an event; skipped", "call_id", s.callID, "error", err)
			continue
		}
		return ev, nil
	}
}

// Send writes one client event (any JSON-encodable value).
func (s *Sideband) Send(ctx context.Context, ev any) error {
	data, err := json.Marshal(ev)
	if err != nil {
		return fmt.Errorf("encode sideband event: %w", err)
	}
	if err := s.conn.SendRaw(ctx, data); err != nil {
		return fmt.Errorf("write sideband of call %s: %w", s.callID, err)
	}
	return nil
}

// Close closes the socket with a normal closure. It does not end the call:
// use Client.Hangup for that.
func (s *Sideband) Close() error {
	err := s.conn.Close()
	if err == nil || websocket.CloseStatus(err) != -1 || errors.Is(err, net.ErrClosed) {
		return nil
	}
	return fmt.Errorf("close sideband of call %s: %w", s.callID, err)
}

// CloseStatus returns the WebSocket close code carried by a Read error,
// or -1 when the connection ended without a close frame (a network fault).
func CloseStatus(err error) int {
	return int(websocket.CloseStatus(err))
}
