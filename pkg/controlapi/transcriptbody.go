package controlapi

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/labstack/echo/v4"

	"github.com/interviewvm/controlplane/pkg/session"
)

// The transcript route is the hot write path of the session VMs: every VM
// posts a batch of up to 500 segments several times a second, and decoding
// that body with encoding/json (reflection, one allocation per field) was
// the largest single cost of the controller in the ingest (profiled). So
// the route reads its body with parseTranscriptBatch, a decoder for that
// one shape, and falls back to the strict generic decoder (decodeJSON) on
// anything it does not recognise. The fast decoder therefore never decides
// an error: every body it refuses goes through exactly the decoding (and
// error messages) of the other routes, and it accepts only bodies that
// encoding/json would decode, strictly, to the same value (a property the
// fuzz test FuzzTranscriptDecoder checks against encoding/json itself).
//
// It accepts: an object whose keys are exactly "segments" (once), holding
// an array of objects whose keys are exactly seq (an integer in int64's
// range, JSON's integer syntax), speaker, text, item_id (strings) and
// failed (true or false); JSON whitespace anywhere between tokens; nothing
// after the object but whitespace. Anything else — null, another key or
// a key in another case (encoding/json matches keys case-insensitively),
// created_at, numbers with a fraction or an exponent, a repeated
// "segments", a syntax error — is left to decodeJSON. Strings with an
// escape or with bytes that are not valid UTF-8 are decoded by
// encoding/json itself, one string at a time, so they read exactly as on
// the generic path.

// parseTranscriptBatch decodes body as a session.TranscriptBatch; ok is
// false when the body is not of the shape it handles.
func parseTranscriptBatch(body string) (batch session.TranscriptBatch, ok bool) {
	p := transcriptParser{s: body}
	if !p.byte('{') {
		return batch, false
	}
	if p.byte('}') {
		return batch, p.end()
	}
	if key, ok := p.key(); !ok || key != "segments" {
		return batch, false
	}
	if !p.byte('[') {
		return batch, false
	}
	// Count the objects first, roughly (a '{' outside a string is not
	// always a segment's, but never undercounts), so the slice is
	// allocated once.
	batch.Segments = make([]session.Segment, 0, p.countObjects())
	if !p.byte(']') {
		for {
			seg, ok := p.segment()
			if !ok {
				return batch, false
			}
			batch.Segments = append(batch.Segments, seg)
			if p.byte(',') {
				continue
			}
			if !p.byte(']') {
				return batch, false
			}
			break
		}
	}
	if !p.byte('}') { // one key only: a repeated "segments" goes to encoding/json
		return batch, false
	}
	return batch, p.end()
}

type transcriptParser struct {
	s string
	i int
}

func (p *transcriptParser) skipSpace() {
	for p.i < len(p.s) {
		switch p.s[p.i] {
		case ' ', '\t', '\n', '\r':
			p.i++
		default:
			return
		}
	}
}

// byte consumes c (after whitespace) if it is next.
func (p *transcriptParser) byte(c byte) bool {
	p.skipSpace()
	if p.i < len(p.s) && p.s[p.i] == c {
		p.i++
		return true
	}
	return false
}

// end reports whether only whitespace is left.
func (p *transcriptParser) end() bool {
	p.skipSpace()
	return p.i == len(p.s)
}

// countObjects counts the '{' from here to the end of the body.
func (p *transcriptParser) countObjects() int {
	return strings.Count(p.s[p.i:], "{")
}

// key reads an object key and its colon. Keys are plain ASCII: one with an
// escape or another byte is refused (encoding/json would read it as an
// unknown field, or match it case-insensitively).
func (p *transcriptParser) key() (string, bool) {
	p.skipSpace()
	if p.i >= len(p.s) || p.s[p.i] != '"' {
		return "", false
	}
	start := p.i + 1
	for j := start; j < len(p.s); j++ {
		c := p.s[j]
		if c == '"' {
			p.i = j + 1
			if !p.byte(':') {
				return "", false
			}
			return p.s[start:j], true
		}
		if c == '\\' || c < 0x20 || c >= utf8.RuneSelf {
			return "", false
		}
	}
	return "", false
}

// str reads a JSON string value.
func (p *transcriptParser) str() (string, bool) {
	p.skipSpace()
	if p.i >= len(p.s) || p.s[p.i] != '"' {
		return "", false
	}
	start := p.i
	// Most strings: no escape, no control byte, valid UTF-8.
	if end := strings.IndexByte(p.s[start+1:], '"'); end >= 0 {
		v := p.s[start+1 : start+1+end]
		if strings.IndexByte(v, '\\') < 0 && !hasControl(v) && utf8.ValidString(v) {
			p.i = start + end + 2
			return v, true
		}
	}
	plain := true // no escape, ASCII only
	for j := start + 1; j < len(p.s); j++ {
		c := p.s[j]
		switch {
		case c == '"':
			p.i = j + 1
			if plain {
				return p.s[start+1 : j], true
			}
			tok := p.s[start:p.i]
			if !hasEscape(tok) && utf8.ValidString(tok) {
				return tok[1 : len(tok)-1], true
			}
			// Escapes, or bytes that are not UTF-8 (which encoding/json
			// replaces with U+FFFD): its own decoding, exactly.
			var v string
			if err := json.Unmarshal([]byte(tok), &v); err != nil {
				return "", false
			}
			return v, true
		case c == '\\':
			plain = false
			j++ // the escaped byte: never the closing quote
		case c < 0x20:
			return "", false // a control byte must be escaped
		case c >= utf8.RuneSelf:
			plain = false
		}
	}
	return "", false
}

// hasControl reports whether s holds a byte JSON requires escaped.
func hasControl(s string) bool {
	for i := range len(s) {
		if s[i] < 0x20 {
			return true
		}
	}
	return false
}

func hasEscape(s string) bool {
	for i := range len(s) {
		if s[i] == '\\' {
			return true
		}
	}
	return false
}

// int reads a JSON integer (no fraction, no exponent) in int64's range.
func (p *transcriptParser) int() (int64, bool) {
	p.skipSpace()
	start := p.i
	j := start
	if j < len(p.s) && p.s[j] == '-' {
		j++
	}
	digits := j
	for j < len(p.s) && p.s[j] >= '0' && p.s[j] <= '9' {
		j++
	}
	switch {
	case j == digits:
		return 0, false
	case p.s[digits] == '0' && j-digits > 1:
		return 0, false // a leading zero: not JSON
	case j < len(p.s) && (p.s[j] == '.' || p.s[j] == 'e' || p.s[j] == 'E'):
		return 0, false // a fraction or an exponent: encoding/json's to judge
	}
	n, err := strconv.ParseInt(p.s[start:j], 10, 64)
	if err != nil {
		return 0, false
	}
	p.i = j
	return n, true
}

// bool reads true or false.
func (p *transcriptParser) bool() (bool, bool) {
	p.skipSpace()
	rest := p.s[p.i:]
	switch {
	case len(rest) >= 4 && rest[:4] == "true":
		p.i += 4
		return true, p.delimited()
	case len(rest) >= 5 && rest[:5] == "false":
		p.i += 5
		return false, p.delimited()
	}
	return false, false
}

// delimited reports whether a literal ended where a value may end.
func (p *transcriptParser) delimited() bool {
	if p.i == len(p.s) {
		return true
	}
	switch p.s[p.i] {
	case ' ', '\t', '\n', '\r', ',', '}', ']':
		return true
	}
	return false
}

// segment reads one segment object.
func (p *transcriptParser) segment() (seg session.Segment, ok bool) {
	if !p.byte('{') {
		return seg, false
	}
	if p.byte('}') {
		return seg, true
	}
	for {
		key, ok := p.key()
		if !ok {
			return seg, false
		}
		switch key {
		case "seq":
			seg.Seq, ok = p.int()
			if ok {
				ok = p.delimited()
			}
		case "speaker":
			seg.Speaker, ok = p.str()
		case "text":
			seg.Text, ok = p.str()
		case "item_id":
			seg.ItemID, ok = p.str()
		case "failed":
			seg.Failed, ok = p.bool()
		default: // created_at, an unknown field, another case
			return seg, false
		}
		if !ok {
			return seg, false
		}
		if p.byte(',') {
			continue
		}
		return seg, p.byte('}')
	}
}

// decodeTranscript reads the transcript route's body: the fast decoder
// when it can, else the generic one over the same bytes.
func decodeTranscript(c echo.Context) (session.TranscriptBatch, error) {
	if err := jsonContentType(c); err != nil {
		return session.TranscriptBatch{}, err
	}
	req := c.Request()
	raw, rerr := readBody(req.Body, req.ContentLength)
	if rerr == nil {
		if batch, ok := parseTranscriptBatch(string(raw)); ok {
			return batch, nil
		}
	}
	// The bytes read, then the read's error (a body over the limit): the
	// generic decoder decides exactly as if it had read the body itself.
	var body io.Reader = bytes.NewReader(raw)
	if rerr != nil {
		body = io.MultiReader(body, failingReader{rerr})
	}
	var batch session.TranscriptBatch
	err := decodeJSON(body, &batch)
	return batch, err
}

// readBody reads r to its end into one buffer sized by the request's
// Content-Length (when it states one within the body limit).
func readBody(r io.Reader, contentLength int64) ([]byte, error) {
	size := int64(512)
	if contentLength > 0 && contentLength < 1<<20 {
		size = contentLength + 1 // room for the read that finds EOF
	}
	b := make([]byte, 0, size)
	for {
		n, err := r.Read(b[len(b):cap(b)])
		b = b[:len(b)+n]
		if errors.Is(err, io.EOF) {
			return b, nil
		}
		if err != nil {
			return b, err
		}
		if len(b) == cap(b) {
			b = append(b, 0)[:len(b)] // grow
		}
	}
}

type failingReader struct{ err error }

func (f failingReader) Read([]byte) (int, error) { return 0, f.err }

// writeTranscriptAck answers with session.TranscriptAck, as c.JSON would
// write it, without reflection.
func writeTranscriptAck(c echo.Context, acked int64) error {
	b := make([]byte, 0, 40)
	b = append(b, `{"acked_seq":`...)
	b = strconv.AppendInt(b, acked, 10)
	b = append(b, "}\n"...)
	return c.JSONBlob(http.StatusOK, b)
}
