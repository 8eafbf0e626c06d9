package realtime

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"

	"github.com/coder/websocket"
)

// maxEvent bounds one sideband message (session.created carries the whole
// session configuration, instructions included).
const maxEvent = 4 << 20

// Sideband is a WebSocket attached to an existing call: it receives every
// server event of the call's session and may send client events. Read from
// one goroutine; Send and Close are safe from any.
type Sideband struct {
	conn   *websocket.Conn
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
	u := c.base.JoinPath("v1/realtime")
	u.RawQuery = "call_id=" + url.QueryEscape(callID)
	h := http.Header{}
	h.Set("Authorization", "Bearer "+c.apiKey)
	conn, resp, err := websocket.Dial(ctx, u.String(), &websocket.DialOptions{
		HTTPClient: &http.Client{Transport: c.http.Transport},
		HTTPHeader: h,
	})
	if err != nil {
		if resp != nil && resp.StatusCode != http.StatusSwitchingProtocols {
			var data []byte
			if resp.Body != nil {
				data, _ = io.ReadAll(io.LimitReader(resp.Body, 1024))
				resp.Body.Close()
			}
			return nil, fmt.Errorf("attach sideband to call %s: %w", callID, parseAPIError(resp.StatusCode, data))
		}
		return nil, fmt.Errorf("attach sideband to call %s: %w", callID, redactURLError(err))
	}
	conn.SetReadLimit(maxEvent)
	c.log.Debug("sideband attached", "call_id", callID)
	return &Sideband{conn: conn, callID: callID, client: c}, nil
}

// CallID returns the id of the call the sideband is attached to.
func (s *Sideband) CallID() string { return s.callID }

// Read returns the next server event. A message that is not a JSON event
// is logged and skipped. When the socket ends, the error tells how:
// CloseStatus(err) is the close code the server sent, or -1 when the
// connection broke without one.
func (s *Sideband) Read(ctx context.Context) (Event, error) {
	for {
		typ, data, err := s.conn.Read(ctx)
		if err != nil {
			return Event{}, fmt.Errorf("read sideband of call %s: %w", s.callID, err)
		}
		if typ != websocket.MessageText {
			s.client.log.Warn("sideband sent a binary message; skipped", "call_id", s.callID, "bytes", len(data))
			continue
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
	if err := s.conn.Write(ctx, websocket.MessageText, data); err != nil {
		return fmt.Errorf("write sideband of call %s: %w", s.callID, err)
	}
	return nil
}

// Close closes the socket with a normal closure. It does not end the call:
// use Client.Hangup for that.
func (s *Sideband) Close() error {
	err := s.conn.Close(websocket.StatusNormalClosure, "")
	if err == nil || errors.Is(err, net.ErrClosed) || websocket.CloseStatus(err) != -1 {
		return nil
	}
	return fmt.Errorf("close sideband of call %s: %w", s.callID, err)
}

// CloseStatus returns the WebSocket close code carried by a Read error,
// or -1 when the connection ended without a close frame (a network fault).
func CloseStatus(err error) int {
	return int(websocket.CloseStatus(err))
}
