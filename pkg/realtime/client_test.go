package realtime_test

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"
	"go.uber.org/goleak"

	"github.com/interviewvm/controlplane/pkg/realtime"
	"github.com/interviewvm/controlplane/pkg/realtime/openaitest"
	"github.com/interviewvm/controlplane/pkg/rtcpeer/rtcpeertest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

const apiKey = "sk-test-0123456789abcdef-never-show"

func testSession() realtime.SessionConfig {
	yes := true
	return realtime.SessionConfig{
		Type:             realtime.SessionTypeRealtime,
		Model:            "gpt-realtime",
		Instructions:     "You interview candidates.",
		OutputModalities: []string{"audio"},
		Audio: &realtime.AudioConfig{
			Input: &realtime.AudioInput{
				Transcription: &realtime.Transcription{Model: "gpt-4o-transcribe"},
				TurnDetection: &realtime.TurnDetection{Type: "server_vad", Threshold: 0.5, CreateResponse: &yes, InterruptResponse: &yes},
			},
			Output: &realtime.AudioOutput{Voice: "marin"},
		},
	}
}

func newBrowser(t *testing.T, ctx context.Context) *rtcpeertest.Browser {
	t.Helper()
	b, err := rtcpeertest.NewBrowser(ctx)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close() })
	return b
}

// noSecretsOrBeta checks no request carried the beta header and no error
// shows the key.
func noBeta(t *testing.T, fake *openaitest.Server) {
	t.Helper()
	for _, r := range fake.Requests() {
		if r.Header.Get("OpenAI-Beta") != "" {
			t.Errorf("request %s %s carried OpenAI-Beta", r.Method, r.Path)
		}
		if r.Path == "/v1/realtime" && strings.Contains(r.Query, "model=") {
			t.Errorf("request used the beta path %s?%s", r.Path, r.Query)
		}
	}
}

func TestCallSidebandHangup(t *testing.T) {
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	fake := openaitest.NewServer(openaitest.Config{APIKey: apiKey})
	defer fake.Close()
	client := realtime.New(realtime.Config{BaseURL: fake.URL, APIKey: apiKey})
	defer client.CloseIdleConnections()

	browser := newBrowser(t, ctx)
	call, err := client.CreateCall(ctx, browser.Offer(), testSession())
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(call.ID, "rtc_") {
		t.Errorf("call id = %q, want rtc_…", call.ID)
	}
	sb, err := client.DialSideband(ctx, call.ID)
	if err != nil {
		t.Fatal(err)
	}
	defer sb.Close()
	if err := browser.Accept(call.AnswerSDP); err != nil {
		t.Fatal(err)
	}
	if err := browser.WaitConnected(ctx); err != nil {
		t.Fatal(err)
	}
	if err := browser.WaitOpen(ctx); err != nil {
		t.Fatal(err)
	}

	ev, err := sb.Read(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if ev.Type != realtime.EventSessionCreated {
		t.Fatalf("first sideband event = %s, want session.created", ev.Type)
	}
	if ins, ok := ev.SessionInstructions(); !ok || ins != "You interview candidates." {
		t.Errorf("session.created instructions = %q, %v", ins, ok)
	}
	// The script greets, then waits for the browser.
	if _, err := browser.WaitEvent(ctx, realtime.EventResponseDone, 1); err != nil {
		t.Fatal(err)
	}
	if err := browser.SayText("hello"); err != nil {
		t.Fatal(err)
	}
	var types []string
	dones := 0
	for dones < 4 {
		ev, err := sb.Read(ctx)
		if err != nil {
			t.Fatalf("read sideband after %q: %v", types, err)
		}
		types = append(types, ev.Type)
		if ev.Type == realtime.EventResponseDone {
			dones++
		}
	}
	for _, want := range []string{realtime.EventInputTransFail, realtime.EventError, realtime.EventInputTransDone, realtime.EventOutputAudioTransDelta} {
		if !strings.Contains(strings.Join(types, " "), want) {
			t.Errorf("sideband stream lacks %s: %q", want, types)
		}
	}
	if _, err := browser.WaitEvent(ctx, realtime.EventResponseDone, 4); err != nil {
		t.Fatalf("the events channel does not mirror the sideband: %v", err)
	}

	if err := client.Hangup(ctx, call.ID); err != nil {
		t.Fatal(err)
	}
	_, err = sb.Read(ctx)
	if got := realtime.CloseStatus(err); got != int(websocket.StatusNormalClosure) {
		t.Errorf("sideband after hang-up: %v (close status %d), want a normal closure", err, got)
	}
	if err := browser.WaitClosed(ctx); err != nil {
		t.Error(err)
	}
	if err := client.Hangup(ctx, call.ID); !realtime.IsAPIError(err, http.StatusNotFound, realtime.CodeCallNotFound) {
		t.Errorf("second hang-up = %v, want 404 call_id_not_found", err)
	}
	info, _ := fake.Call(call.ID)
	if !info.HungUp || info.Sidebands != 1 {
		t.Errorf("call = %+v", info)
	}
	noBeta(t, fake)
}

func TestClientSecretAndDirectCall(t *testing.T) {
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	fake := openaitest.NewServer(openaitest.Config{APIKey: apiKey, Script: []openaitest.Step{}})
	defer fake.Close()
	client := realtime.New(realtime.Config{BaseURL: fake.URL, APIKey: apiKey})
	defer client.CloseIdleConnections()

	before := time.Now()
	sec, err := client.CreateClientSecret(ctx, testSession(), 2*time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(sec.Value, "ek_") || sec.Model != "gpt-realtime" || sec.SessionID == "" {
		t.Errorf("secret = %+v", sec)
	}
	if d := sec.ExpiresAt.Sub(before); d < 110*time.Second || d > 130*time.Second {
		t.Errorf("secret expires in %v, want ~2m", d)
	}

	// The browser posts its offer directly with the ephemeral key.
	browser := newBrowser(t, ctx)
	req, _ := http.NewRequestWithContext(ctx, http.MethodPost, fake.URL+"/v1/realtime/calls", strings.NewReader(browser.Offer()))
	req.Header.Set("Authorization", "Bearer "+sec.Value)
	req.Header.Set("Content-Type", "application/sdp")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	answer, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusCreated {
		t.Fatalf("direct call = %d %s", resp.StatusCode, answer)
	}
	id := resp.Header.Get("Location")[strings.LastIndex(resp.Header.Get("Location"), "/")+1:]
	if err := browser.Accept(string(answer)); err != nil {
		t.Fatal(err)
	}
	if err := browser.WaitOpen(ctx); err != nil {
		t.Fatal(err)
	}
	info, _ := fake.Call(id)
	if !info.Secret || !strings.Contains(string(info.Session), "You interview candidates.") {
		t.Errorf("call made with the secret = %+v", info)
	}

	// The sideband takes the server key only.
	ek := realtime.New(realtime.Config{BaseURL: fake.URL, APIKey: sec.Value})
	if _, err := ek.DialSideband(ctx, id); !realtime.IsAPIError(err, http.StatusNotFound, realtime.CodeCallNotFound) {
		t.Errorf("sideband with the ephemeral key = %v, want 404 call_id_not_found", err)
	}
	sb, err := client.DialSideband(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	if err := sb.Close(); err != nil {
		t.Error(err)
	}
	if err := client.Hangup(ctx, id); err != nil {
		t.Error(err)
	}
	noBeta(t, fake)
}

func TestFakeRejectsLikeTheAPI(t *testing.T) {
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	fake := openaitest.NewServer(openaitest.Config{APIKey: apiKey})
	defer fake.Close()
	client := realtime.New(realtime.Config{BaseURL: fake.URL, APIKey: apiKey})
	defer client.CloseIdleConnections()
	browser := newBrowser(t, ctx)
	good := browser.Offer()
	without := func(prefix string) string {
		var out []string
		for l := range strings.Lines(good) {
			if !strings.HasPrefix(l, prefix) {
				out = append(out, l)
			}
		}
		return strings.Join(out, "")
	}
	noData := func() string {
		i := strings.Index(good, "m=application")
		return good[:i]
	}()
	for name, offer := range map[string]string{
		"empty":          "",
		"version only":   "v=0\r\n",
		"json":           `{"sdp":"v=0"}`,
		"no ice-ufrag":   without("a=ice-ufrag"),
		"no ice-pwd":     without("a=ice-pwd"),
		"no fingerprint": without("a=fingerprint"),
		"no setup":       without("a=setup"),
		"no datachannel": noData,
	} {
		t.Run(name, func(t *testing.T) {
			if err := realtime.CheckOffer(offer); err == nil {
				t.Error("CheckOffer accepted it")
			}
			_, err := client.CreateCall(ctx, offer, testSession())
			if !realtime.IsAPIError(err, http.StatusBadRequest, realtime.CodeInvalidOffer) {
				t.Errorf("CreateCall = %v, want 400 invalid_offer", err)
			}
		})
	}
	if err := realtime.CheckOffer(good); err != nil {
		t.Errorf("CheckOffer(pion's offer) = %v", err)
	}

	t.Run("beta session fields", func(t *testing.T) {
		raw := `{"type":"realtime","voice":"alloy"}`
		status, code := postMultipart(t, ctx, fake.URL, apiKey, good, raw)
		if status != http.StatusBadRequest || code != realtime.CodeUnknownParam {
			t.Errorf("beta session = %d %s", status, code)
		}
	})
	t.Run("session without type", func(t *testing.T) {
		status, code := postMultipart(t, ctx, fake.URL, apiKey, good, `{"model":"gpt-realtime"}`)
		if status != http.StatusBadRequest || code != realtime.CodeMissingParam {
			t.Errorf("untyped session = %d %s", status, code)
		}
	})
	t.Run("wrong key", func(t *testing.T) {
		bad := realtime.New(realtime.Config{BaseURL: fake.URL, APIKey: "sk-wrong-key-value"})
		_, err := bad.CreateCall(ctx, good, testSession())
		if !realtime.IsAPIError(err, http.StatusUnauthorized, "") {
			t.Errorf("wrong key = %v, want 401", err)
		}
		if strings.Contains(err.Error(), "sk-wrong-key-value") {
			t.Errorf("error shows the key: %v", err)
		}
	})
	t.Run("unknown call", func(t *testing.T) {
		if _, err := client.DialSideband(ctx, "rtc_nope"); !realtime.IsAPIError(err, http.StatusNotFound, realtime.CodeCallNotFound) {
			t.Errorf("sideband to unknown call = %v", err)
		}
		if err := client.Hangup(ctx, "rtc_nope"); !realtime.IsAPIError(err, http.StatusNotFound, realtime.CodeCallNotFound) {
			t.Errorf("hang-up of unknown call = %v", err)
		}
	})
	t.Run("beta shapes", func(t *testing.T) {
		for _, tc := range []struct{ path, ctype, body string }{
			{"/v1/realtime?model=gpt-4o-realtime-preview", "application/sdp", good},
			{"/v1/realtime/sessions", "application/json", `{"model":"gpt-realtime"}`},
			{"/v1/realtime/transcription_sessions", "application/json", `{}`},
		} {
			status, code := post(t, ctx, fake.URL+tc.path, apiKey, tc.ctype, tc.body, nil)
			if status != http.StatusBadRequest || code != realtime.CodeBetaShape {
				t.Errorf("POST %s = %d %s, want 400 beta_api_shape_disabled", tc.path, status, code)
			}
		}
		status, code := post(t, ctx, fake.URL+"/v1/realtime/client_secrets", apiKey, "application/json",
			`{"session":{"type":"realtime"}}`, http.Header{"Openai-Beta": {"realtime=v1"}})
		if status != http.StatusBadRequest || code != realtime.CodeBetaShape {
			t.Errorf("OpenAI-Beta header = %d %s, want 400 beta_api_shape_disabled", status, code)
		}
		conn, _, err := websocket.Dial(ctx, strings.Replace(fake.URL, "http", "ws", 1)+"/v1/realtime?model=gpt-realtime",
			&websocket.DialOptions{HTTPHeader: http.Header{"Authorization": {"Bearer " + apiKey}, "OpenAI-Beta": {"realtime=v1"}}})
		if err != nil {
			t.Fatal(err)
		}
		defer conn.CloseNow()
		_, data, err := conn.Read(ctx)
		if err != nil || !strings.Contains(string(data), realtime.CodeBetaShape) {
			t.Errorf("beta socket first message = %s, %v", data, err)
		}
		_, _, err = conn.Read(ctx)
		if websocket.CloseStatus(err) != 4000 {
			t.Errorf("beta socket closed with %v, want 4000", err)
		}
	})
}

// post sends one request and returns the status and error code.
func post(t *testing.T, ctx context.Context, url, key, ctype, body string, h http.Header) (int, string) {
	t.Helper()
	req, _ := http.NewRequestWithContext(ctx, http.MethodPost, url, strings.NewReader(body))
	for k, v := range h {
		req.Header[k] = v
	}
	req.Header.Set("Authorization", "Bearer "+key)
	req.Header.Set("Content-Type", ctype)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(resp.Body)
	var env struct {
		Error struct {
			Code *string `json:"code"`
		} `json:"error"`
	}
	if json.Unmarshal(data, &env) != nil || env.Error.Code == nil {
		return resp.StatusCode, ""
	}
	return resp.StatusCode, *env.Error.Code
}

func postMultipart(t *testing.T, ctx context.Context, base, key, offer, sess string) (int, string) {
	t.Helper()
	const boundary = "fakeboundary"
	body := "--" + boundary + "\r\nContent-Disposition: form-data; name=\"sdp\"\r\n\r\n" + offer +
		"\r\n--" + boundary + "\r\nContent-Disposition: form-data; name=\"session\"\r\n\r\n" + sess +
		"\r\n--" + boundary + "--\r\n"
	return post(t, ctx, base+"/v1/realtime/calls", key, "multipart/form-data; boundary="+boundary, body, nil)
}
