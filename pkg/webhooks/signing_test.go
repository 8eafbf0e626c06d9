package webhooks

import (
	"encoding/base64"
	"encoding/json"
	"errors"
	"net/http"
	"strings"
	"testing"
	"time"

	standardwebhooks "github.com/standard-webhooks/standard-webhooks/libraries/go"
)

// The example from the Standard Webhooks specification and its reference
// libraries' test suites.
func TestSignPublishedVector(t *testing.T) {
	got, err := Sign("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", "msg_p5jXN8AQM9LWM0D4loKWxJek",
		time.Unix(1614265330, 0), []byte(`{"test": 2432232314}`))
	if err != nil {
		t.Fatal(err)
	}
	if want := "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="; got != want {
		t.Fatalf("signature %q, want %q", got, want)
	}
}

func TestSignVerifiedByReferenceLibrary(t *testing.T) {
	secret, err := NewSecret()
	if err != nil {
		t.Fatal(err)
	}
	key, err := base64.StdEncoding.DecodeString(strings.TrimPrefix(secret, "whsec_"))
	if err != nil || !strings.HasPrefix(secret, "whsec_") || len(key) != 32 {
		t.Fatalf("secret %q: want whsec_ + base64 of 32 bytes (decode err %v, %d bytes)", secret, err, len(key))
	}
	id, err := NewMessageID()
	if err != nil || !strings.HasPrefix(id, "msg_") {
		t.Fatalf("message id %q, err %v", id, err)
	}
	body, err := NewBody(EventInterviewCompleted, time.Now(), map[string]any{"id": "iv_1", "state": "completed"})
	if err != nil {
		t.Fatal(err)
	}
	h := http.Header{}
	if err := SetHeaders(h, secret, id, time.Now(), body); err != nil {
		t.Fatal(err)
	}
	verifier, err := standardwebhooks.NewWebhook(secret)
	if err != nil {
		t.Fatal(err)
	}
	if err := verifier.Verify(body, h); err != nil {
		t.Fatalf("reference verifier refused our signature: %v", err)
	}
	if h.Get(HeaderID) != id {
		t.Fatalf("webhook-id %q, want %q", h.Get(HeaderID), id)
	}
	tampered := append([]byte{}, body...)
	tampered[len(tampered)-2] ^= 1
	if err := verifier.Verify(tampered, h); err == nil {
		t.Fatal("reference verifier accepted a tampered body")
	}
	other, _ := NewSecret()
	otherVerifier, _ := standardwebhooks.NewWebhook(other)
	if err := otherVerifier.Verify(body, h); err == nil {
		t.Fatal("a different secret verified the signature")
	}
}

func TestSignRejectsBadSecret(t *testing.T) {
	for _, s := range []string{"", "whsec_", "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", "whsec_not base64!"} {
		if _, err := Sign(s, "msg_1", time.Now(), nil); !errors.Is(err, ErrBadSecret) {
			t.Errorf("Sign with secret %q: err %v, want ErrBadSecret", s, err)
		}
	}
}

func TestNewBodyShape(t *testing.T) {
	at := time.Date(2026, 1, 2, 3, 4, 5, 0, time.FixedZone("x", 3600))
	body, err := NewBody(EventInsightsReady, at, map[string]string{"id": "iv_9"})
	if err != nil {
		t.Fatal(err)
	}
	var got struct {
		Type      string `json:"type"`
		Timestamp string `json:"timestamp"`
		Data      struct {
			Interview map[string]string `json:"interview"`
		} `json:"data"`
	}
	if err := json.Unmarshal(body, &got); err != nil {
		t.Fatal(err)
	}
	if got.Type != "insights.ready" || got.Timestamp != "2026-01-02T02:04:05Z" || got.Data.Interview["id"] != "iv_9" {
		t.Fatalf("body %s", body)
	}
	if _, err := NewBody("interview.exploded", at, nil); err == nil {
		t.Fatal("NewBody accepted an unknown type")
	}
}

func TestParseEvents(t *testing.T) {
	got, err := ParseEvents([]string{"interview.completed", "insights.ready", "interview.completed"})
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 || got[0] != EventInterviewCompleted || got[1] != EventInsightsReady {
		t.Fatalf("ParseEvents = %v", got)
	}
	all := make([]string, len(EventTypes))
	for i, e := range EventTypes {
		all[i] = string(e)
	}
	if got, err := ParseEvents(all); err != nil || len(got) != 7 {
		t.Fatalf("every known type: %v, %v", got, err)
	}
	for _, bad := range [][]string{nil, {}, {"interview.done"}, {"interview.ready", ""}, {"Interview.Ready"}} {
		if _, err := ParseEvents(bad); !errors.Is(err, ErrInvalidEvents) {
			t.Errorf("ParseEvents(%q): err %v, want ErrInvalidEvents", bad, err)
		}
	}
}
