package main

import (
	"context"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/interviewvm/controlplane/pkg/rtcpeer/rtcpeertest"
)

// TestInterviewOverWebRTC is the candidate's whole path on the local
// provider with the simulated interviewer: a pion browser posts its offer
// through the controller with the start's access token, ICE connects, the
// events channel opens, answers typed by the candidate and the
// interviewer's questions reach the controller's transcript in order, and
// the end leaves no VM behind.
func TestInterviewOverWebRTC(t *testing.T) {
	c := startController(t, nil)
	tok := token(t, uuid.NewString(), "recruiter")
	id := c.seed(t, tok)
	ans := c.mustCall(t, 200, "POST", "/v1/interviews/"+id+"/start?wait=30", tok, nil)
	conn := ans["connect"].(map[string]any)
	pids := vmPIDs(t, id)

	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	browser, err := rtcpeertest.NewBrowser(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer browser.Close()
	req, _ := http.NewRequestWithContext(ctx, "POST", conn["sdp_url"].(string), strings.NewReader(browser.Offer()))
	req.Header.Set("Content-Type", "application/sdp")
	req.Header.Set("Authorization", "Bearer "+conn["access_token"].(string))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	answer, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 201 || resp.Header.Get("Content-Type") != "application/sdp" {
		t.Fatalf("POST sdp = %d %s", resp.StatusCode, answer)
	}
	if err := browser.Accept(string(answer)); err != nil {
		t.Fatal(err)
	}
	if err := browser.WaitConnected(ctx); err != nil {
		t.Fatalf("ICE: %v", err)
	}
	if err := browser.WaitOpen(ctx); err != nil {
		t.Fatalf("events channel: %v", err)
	}
	if st := c.mustCall(t, 200, "GET", "/v1/interviews/"+id, tok, nil)["status"]; st != "in_progress" {
		t.Fatalf("status after the answered offer = %v", st)
	}
	// The interviewer asks; the candidate answers twice.
	if _, err := browser.WaitEvent(ctx, "response.done", 1); err != nil {
		t.Fatalf("first question: %v", err)
	}
	for i, answer := range []string{"I have written Go for six years.", "Mostly PostgreSQL, with pgx."} {
		if err := browser.SayText(answer); err != nil {
			t.Fatal(err)
		}
		if _, err := browser.WaitEvent(ctx, "response.done", i+2); err != nil {
			t.Fatalf("question after answer %d: %v", i+1, err)
		}
	}
	// The transcript reaches the controller, in conversation order.
	var segs []any
	eventually(t, "five transcript segments at the controller", 30*time.Second, func() bool {
		segs = c.mustCall(t, 200, "GET", "/v1/interviews/"+id+"/transcript", tok, nil)["segments"].([]any)
		return len(segs) >= 5
	})
	var speakers []string
	for n, s := range segs[:5] {
		m := s.(map[string]any)
		if int(m["seq"].(float64)) != n+1 {
			t.Fatalf("segment %d has seq %v", n, m["seq"])
		}
		speakers = append(speakers, m["speaker"].(string))
	}
	if got := strings.Join(speakers, ","); got != "interviewer,candidate,interviewer,candidate,interviewer" {
		t.Fatalf("speakers = %s", got)
	}
	if txt := segs[1].(map[string]any)["text"]; txt != "I have written Go for six years." {
		t.Fatalf("candidate's first line = %q", txt)
	}

	c.mustCall(t, 202, "POST", "/v1/interviews/"+id+"/end", tok, nil)
	var final map[string]any
	eventually(t, "completed", 30*time.Second, func() bool {
		final = c.mustCall(t, 200, "GET", "/v1/interviews/"+id, tok, nil)
		return final["status"] == "completed"
	})
	tr := c.mustCall(t, 200, "GET", "/v1/interviews/"+id+"/transcript", tok, nil)
	if tr["complete"] != true || len(tr["segments"].([]any)) < 5 {
		t.Fatalf("final transcript = %v", tr)
	}
	for _, p := range pids {
		eventually(t, "the VM to exit and be reaped", 30*time.Second, func() bool { return gone(p) })
	}
}
