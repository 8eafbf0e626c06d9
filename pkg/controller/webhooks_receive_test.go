package controller

import (
	"bytes"
	"context"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
)

// TestWebhookReceiveCommand: `controller webhooks receive` registers
// itself with a running controller, prints the events of its tenant once
// their signatures verify, refuses a forged message, and removes its
// endpoint when it stops.
func TestWebhookReceiveCommand(t *testing.T) {
	c := startController(t, fastWebhooks(nil))
	tok := token(t, uuid.NewString(), "admin")
	other := token(t, uuid.NewString(), "admin")

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var stdout, stderr syncBuffer
	ready := make(chan string, 1)
	done := make(chan error, 1)
	getenv := func(k string) string {
		if k == "TOKEN" {
			return tok
		}
		return ""
	}
	go func() {
		done <- runReceive(ctx, []string{"--listen", "127.0.0.1:0", "--api", c.base}, getenv, &stdout, &stderr, ready)
	}()
	var endpoint string
	select {
	case endpoint = <-ready:
	case err := <-done:
		t.Fatalf("receive ended before registering: %v\n%s", err, stderr.String())
	case <-time.After(30 * time.Second):
		t.Fatalf("receive did not register:\n%s", stderr.String())
	}
	list := c.mustCall(t, 200, "GET", "/v1/webhooks", tok, nil)["items"].([]any)
	if len(list) != 1 || list[0].(map[string]any)["id"] != endpoint {
		t.Fatalf("endpoints = %v, want only %s", list, endpoint)
	}
	url := list[0].(map[string]any)["url"].(string)

	mine := c.seedInterviews(t, tok, 1, map[string]any{"external_id": "ats-42"})[0]
	theirs := c.seedInterviews(t, other, 1, nil)[0]
	c.mustCall(t, 200, "POST", "/v1/interviews/"+theirs+"/cancel", other, nil)
	c.mustCall(t, 200, "POST", "/v1/interviews/"+mine+"/cancel", tok, nil)
	eventually(t, "the cancellation to be printed", 60*time.Second, func() bool {
		return strings.Contains(stdout.String(), "interview="+mine)
	})
	line := stdout.String()
	for _, want := range []string{"interview.cancelled", "status=cancelled", "external_id=ats-42", "verified", "webhook-id=msg_"} {
		if !strings.Contains(line, want) {
			t.Errorf("printed %q, want it to contain %q", line, want)
		}
	}
	if strings.Contains(line, theirs) {
		t.Errorf("another tenant's event was received: %q", line)
	}

	// A message not signed with the endpoint's secret is refused and not printed.
	forged, err := http.NewRequest("POST", url, bytes.NewReader([]byte(`{"type":"interview.completed","data":{"interview":{"id":"forged"}}}`)))
	if err != nil {
		t.Fatal(err)
	}
	forged.Header.Set("webhook-id", "msg_forged")
	forged.Header.Set("webhook-timestamp", "1700000000")
	forged.Header.Set("webhook-signature", "v1,AAAA")
	resp, err := http.DefaultClient.Do(forged)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusUnauthorized || strings.Contains(stdout.String(), "forged") {
		t.Fatalf("forged message = %d, printed %q; want 401 and not printed", resp.StatusCode, stdout.String())
	}

	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("receive ended with %v\n%s", err, stderr.String())
		}
	case <-time.After(30 * time.Second):
		t.Fatal("receive did not stop")
	}
	if list := c.mustCall(t, 200, "GET", "/v1/webhooks", tok, nil)["items"].([]any); len(list) != 0 {
		t.Fatalf("after receive stopped, endpoints = %v, want none", list)
	}
}

// TestWebhookReceiveNeedsAToken: without a token it says what it needs
// and registers nothing.
func TestWebhookReceiveNeedsAToken(t *testing.T) {
	var out, errb bytes.Buffer
	err := runReceive(context.Background(), []string{"--listen", "127.0.0.1:0"}, func(string) string { return "" }, &out, &errb, nil)
	if err == nil || !strings.Contains(err.Error(), "--token") {
		t.Fatalf("receive without a token = %v, want an error naming --token", err)
	}
}
