package controlapi

import (
	"bytes"
	"errors"
	"io"
	"strings"
	"sync"

	"github.com/labstack/echo/v4"

	"github.com/interviewvm/controlplane/pkg/session"
)

// Every VM heartbeats every HEARTBEAT_INTERVAL: at 10,000 VMs, 5,000
// requests a second, and encoding/json's reflection-driven decoder (and
// its buffers) was the largest part of the heartbeat handler's CPU. A
// heartbeat body of the usual shape is parsed here instead; any other body
// takes decodeInternal, which judges it and words its error, so the answer
// to every body is the one decodeInternal gives.

// heartbeatBodyMax is the largest body parsed on the fast path: a
// heartbeat with the longest sideband the spec allows fits.
const heartbeatBodyMax = 1024

// bodyBuffers holds the buffers heartbeat bodies are read into.
type bodyBuffers struct{ pool sync.Pool }

func (b *bodyBuffers) get() *[heartbeatBodyMax]byte {
	if p, ok := b.pool.Get().(*[heartbeatBodyMax]byte); ok {
		return p
	}
	return new([heartbeatBodyMax]byte)
}

func (b *bodyBuffers) put(p *[heartbeatBodyMax]byte) { b.pool.Put(p) }

// decodeHeartbeat reads a heartbeat body into hb.
func (s *Server) decodeHeartbeat(c echo.Context, hb *session.Heartbeat) error {
	req := c.Request()
	if ct := req.Header.Get(echo.HeaderContentType); ct != "" && !strings.HasPrefix(strings.ToLower(ct), echo.MIMEApplicationJSON) {
		return decodeInternal(c, hb)
	}
	buf := s.bodyBufs.get()
	defer s.bodyBufs.put(buf)
	n, err := readFull(req.Body, buf[:])
	if errors.Is(err, io.EOF) && parseHeartbeat(buf[:n], hb) {
		return nil
	}
	// The general path sees the same bytes, then what is left (or the
	// error that stopped the read).
	*hb = session.Heartbeat{}
	rest := req.Body
	if err != nil {
		rest = io.NopCloser(errReader{err})
	}
	req.Body = struct {
		io.Reader
		io.Closer
	}{io.MultiReader(bytes.NewReader(bytes.Clone(buf[:n])), rest), rest}
	return decodeInternal(c, hb)
}

// readFull reads r into p until p is full (err nil) or r ends (err io.EOF)
// or fails.
func readFull(r io.Reader, p []byte) (int, error) {
	n := 0
	for n < len(p) {
		m, err := r.Read(p[n:])
		n += m
		if err != nil {
			return n, err
		}
	}
	return n, nil
}

type errReader struct{ err error }

func (e errReader) Read([]byte) (int, error) { return 0, e.err }

// parseHeartbeat parses b, a whole body, into hb when it is one JSON
// object of the Heartbeat fields, each named exactly as in the spec, with
// integers written without fraction or exponent and a sideband of
// printable ASCII without escapes. It returns false for anything else,
// hb then being partly set: such a body is for the general decoder.
func parseHeartbeat(b []byte, hb *session.Heartbeat) bool {
	i := skipSpace(b, 0)
	if i >= len(b) || b[i] != '{' {
		return false
	}
	i = skipSpace(b, i+1)
	if i < len(b) && b[i] == '}' {
		return skipSpace(b, i+1) == len(b)
	}
	for {
		if i >= len(b) || b[i] != '"' {
			return false
		}
		end := bytes.IndexByte(b[i+1:], '"')
		if end < 0 {
			return false
		}
		key := b[i+1 : i+1+end]
		i = skipSpace(b, i+end+2)
		if i >= len(b) || b[i] != ':' {
			return false
		}
		i = skipSpace(b, i+1)
		var ok bool
		switch string(key) {
		case "last_seq":
			hb.LastSeq, i, ok = parseInt(b, i)
		case "acked_seq":
			hb.AckedSeq, i, ok = parseInt(b, i)
		case "retries":
			hb.Retries, i, ok = parseInt(b, i)
		case "buffered_segments":
			var v int64
			v, i, ok = parseInt(b, i)
			hb.BufferedSegments = int(v)
			ok = ok && int64(hb.BufferedSegments) == v
		case "sideband":
			hb.Sideband, i, ok = parsePlainString(b, i)
		}
		if !ok {
			return false
		}
		i = skipSpace(b, i)
		if i >= len(b) {
			return false
		}
		switch b[i] {
		case ',':
			i = skipSpace(b, i+1)
		case '}':
			return skipSpace(b, i+1) == len(b)
		default:
			return false
		}
	}
}

func skipSpace(b []byte, i int) int {
	for i < len(b) && (b[i] == ' ' || b[i] == '\t' || b[i] == '\n' || b[i] == '\r') {
		i++
	}
	return i
}

// parseInt parses a JSON integer of at most 18 digits (no fraction,
// exponent or leading zero) at b[i:], followed by a delimiter.
func parseInt(b []byte, i int) (int64, int, bool) {
	neg := i < len(b) && b[i] == '-'
	if neg {
		i++
	}
	start := i
	var v int64
	for i < len(b) && b[i] >= '0' && b[i] <= '9' {
		v = v*10 + int64(b[i]-'0')
		i++
	}
	digits := i - start
	if digits == 0 || digits > 18 || (digits > 1 && b[start] == '0') {
		return 0, i, false
	}
	if i < len(b) && b[i] != ',' && b[i] != '}' && b[i] != ' ' && b[i] != '\t' && b[i] != '\n' && b[i] != '\r' {
		return 0, i, false
	}
	if neg {
		v = -v
	}
	return v, i, true
}

// parsePlainString parses a JSON string of printable ASCII without
// escapes at b[i:].
func parsePlainString(b []byte, i int) (string, int, bool) {
	if i >= len(b) || b[i] != '"' {
		return "", i, false
	}
	for j := i + 1; j < len(b); j++ {
		switch c := b[j]; {
		case c == '"':
			return string(b[i+1 : j]), j + 1, true
		case c < 0x20 || c > 0x7e || c == '\\':
			return "", j, false
		}
	}
	return "", len(b), false
}
