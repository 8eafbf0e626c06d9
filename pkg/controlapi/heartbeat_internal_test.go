package controlapi

import (
	"bytes"
	"encoding/json"
	"testing"

	"github.com/interviewvm/controlplane/pkg/session"
)

// strictHeartbeat decodes b as the general path does (unknown fields
// refused, nothing after the object).
func strictHeartbeat(b []byte) (session.Heartbeat, bool) {
	var hb session.Heartbeat
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&hb); err != nil || dec.More() {
		return session.Heartbeat{}, false
	}
	return hb, true
}

var heartbeatBodies = []string{
	`{}`,
	` { } `,
	`{"last_seq":12,"acked_seq":12,"buffered_segments":0,"retries":0}`,
	`{"last_seq":12,"acked_seq":11,"buffered_segments":3,"retries":2,"sideband":"talking"}`,
	"{\n\t\"last_seq\" : 7 ,\r\n \"retries\":1}\n",
	`{"last_seq":-1}`,
	`{"last_seq":-0}`,
	`{"last_seq":1,"last_seq":2}`,
	`{"last_seq":999999999999999999}`,
	`{"last_seq":9999999999999999999}`,
	`{"last_seq":99999999999999999999}`,
	`{"last_seq":01}`,
	`{"last_seq":1.0}`,
	`{"last_seq":1e3}`,
	`{"last_seq":"1"}`,
	`{"last_seq":null}`,
	`{"last_seq":true}`,
	`{"last_seq":}`,
	`{"last_seq":-}`,
	`{"LAST_SEQ":4}`,
	`{"last\u005fseq":4}`,
	`{"unknown":1}`,
	`{"sideband":"a\"b"}`,
	`{"sideband":"a\\b"}`,
	`{"sideband":"caf\u00e9"}`,
	"{\"sideband\":\"café\"}",
	"{\"sideband\":\"a\x01\"}",
	"{\"sideband\":\"\xff\"}",
	`{"sideband":null}`,
	`{"sideband":""}`,
	`{"sideband":5}`,
	`{"last_seq":1}{}`,
	`{"last_seq":1} x`,
	`{"last_seq":1,}`,
	`{,}`,
	`{"last_seq":1`,
	`{"last_seq" 1}`,
	`[]`,
	`null`,
	``,
	`{"buffered_segments":12,"retries":-3}`,
}

// TestParseHeartbeatAgreesWithDecoder: whatever body the fast path
// accepts, it reads exactly as encoding/json's strict decoder does; a body
// it declines goes to that decoder, so every answer is the decoder's.
func TestParseHeartbeatAgreesWithDecoder(t *testing.T) {
	accepted := 0
	for _, body := range heartbeatBodies {
		var got session.Heartbeat
		if !parseHeartbeat([]byte(body), &got) {
			continue
		}
		accepted++
		want, ok := strictHeartbeat([]byte(body))
		if !ok {
			t.Errorf("fast path accepted %q, which the decoder refuses", body)
			continue
		}
		if got != want {
			t.Errorf("fast path read %q as %+v, the decoder as %+v", body, got, want)
		}
	}
	// The usual bodies do take the fast path.
	if accepted < 10 {
		t.Errorf("fast path accepted %d of the bodies, want at least 10", accepted)
	}
	for _, body := range []string{`{"last_seq":12,"acked_seq":12,"buffered_segments":0,"retries":0}`, `{}`} {
		var hb session.Heartbeat
		if !parseHeartbeat([]byte(body), &hb) {
			t.Errorf("fast path declined %q", body)
		}
	}
}

// FuzzParseHeartbeat checks the same on arbitrary bodies: go test -run XXX
// -fuzz FuzzParseHeartbeat ./pkg/controlapi
func FuzzParseHeartbeat(f *testing.F) {
	for _, body := range heartbeatBodies {
		f.Add([]byte(body))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		var got session.Heartbeat
		if !parseHeartbeat(body, &got) {
			return
		}
		want, ok := strictHeartbeat(body)
		if !ok || got != want {
			t.Fatalf("fast path read %q as %+v; decoder: %+v (ok %v)", body, got, want, ok)
		}
	})
}
