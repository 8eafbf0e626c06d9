package controller

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/interviewvm/controlplane/pkg/realtime/openaitest"
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
	browser := connect(ctx, t, conn)
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

// connect is the candidate's browser joining: its offer goes through the
// controller with the start's access token; ICE connects and the events
// channel opens.
func connect(ctx context.Context, t *testing.T, conn map[string]any) *rtcpeertest.Browser {
	t.Helper()
	browser, err := rtcpeertest.NewBrowser(ctx)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { browser.Close() })
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
	return browser
}

// TestInterviewWithOpenAI runs the openai mode through the controller
// against the fake OpenAI: the key reaches the VM only as a platform
// secret, the VM creates the call with it, follows the sideband, and the
// transcript the API produces (out of order, a failed transcription)
// arrives at the controller in conversation order.
func TestInterviewWithOpenAI(t *testing.T) {
	const key = "sk-test-openai-key-never-logged"
	fake := openaitest.NewServer(openaitest.Config{APIKey: key})
	defer fake.Close()
	c := startController(t, map[string]string{"REALTIME": "openai", "OPENAI_API_KEY": key, "OPENAI_BASE_URL": fake.URL})
	tok := token(t, uuid.NewString(), "recruiter")
	id := c.seed(t, tok)
	ans := c.mustCall(t, 200, "POST", "/v1/interviews/"+id+"/start?wait=30", tok, nil)
	if strings.Contains(fmt.Sprint(ans), key) {
		t.Fatal("the start answer carries the OpenAI key")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	browser := connect(ctx, t, ans["connect"].(map[string]any))
	if err := browser.SayText("I built a scheduler."); err != nil {
		t.Fatal(err)
	}
	want := openaitest.DefaultTranscript()
	var segs []any
	eventually(t, "the scripted transcript at the controller", 30*time.Second, func() bool {
		segs = c.mustCall(t, 200, "GET", "/v1/interviews/"+id+"/transcript", tok, nil)["segments"].([]any)
		return len(segs) >= len(want)
	})
	for i, w := range want {
		got := segs[i].(map[string]any)
		failed, _ := got["failed"].(bool)
		if got["speaker"] != w.Speaker || got["text"] != w.Text || got["item_id"] != w.ItemID || failed != w.Failed {
			t.Fatalf("segment %d = %v, want %+v", i+1, got, w)
		}
	}
	c.mustCall(t, 202, "POST", "/v1/interviews/"+id+"/end", tok, nil)
	eventually(t, "completed", 30*time.Second, func() bool {
		return c.mustCall(t, 200, "GET", "/v1/interviews/"+id, tok, nil)["status"] == "completed"
	})
	for _, r := range fake.Requests() {
		if strings.Contains(r.Path, "sessions") || r.Query != "" && strings.Contains(r.Query, "model=") {
			t.Fatalf("a beta-shaped request reached the fake: %+v", r)
		}
	}
	if strings.Contains(c.logs.String(), key) {
		t.Fatal("the OpenAI key appears in the controller's or the VM's log")
	}
}
