package realtime_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/interviewvm/controlplane/pkg/realtime"
	"github.com/interviewvm/controlplane/pkg/realtime/openaitest"
)

// TestSDKRequestsAgainstTheFake proves the calls pkg/realtime makes are
// the official SDK's (its User-Agent) and that the fake accepts them: a
// client secret, a call, the sideband with call_id, the hang-up.
func TestSDKRequestsAgainstTheFake(t *testing.T) {
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	fake := openaitest.NewServer(openaitest.Config{APIKey: apiKey})
	defer fake.Close()
	client := realtime.New(realtime.Config{BaseURL: fake.URL, APIKey: apiKey})
	defer client.CloseIdleConnections()

	sec, err := client.CreateClientSecret(ctx, testSession(), time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(sec.Value, "ek_") || sec.Model != "gpt-realtime" || time.Until(sec.ExpiresAt) <= 0 {
		t.Errorf("client secret = %+v", sec)
	}
	browser := newBrowser(t, ctx)
	call, err := client.CreateCall(ctx, browser.Offer(), testSession())
	if err != nil {
		t.Fatal(err)
	}
	sb, err := client.DialSideband(ctx, call.ID)
	if err != nil {
		t.Fatal(err)
	}
	defer sb.Close()
	if sb.CallID() != call.ID {
		t.Errorf("sideband call id = %q, want %q", sb.CallID(), call.ID)
	}
	// The API greets a sideband with session.created: it is attached.
	if ev, err := sb.Read(ctx); err != nil || ev.Type != realtime.EventSessionCreated {
		t.Fatalf("first sideband event = %+v, %v; want session.created", ev, err)
	}
	if err := client.Hangup(ctx, call.ID); err != nil {
		t.Fatal(err)
	}
	info, ok := fake.Call(call.ID)
	if !ok || !info.HungUp || info.Sidebands != 1 {
		t.Errorf("call = %+v", info)
	}
	if !strings.Contains(string(info.Session), `"transcription":{"model":"gpt-4o-transcribe"}`) ||
		!strings.Contains(string(info.Session), `"voice":"marin"`) {
		t.Errorf("the session the SDK sent lost fields: %s", info.Session)
	}
	// The fake records a request when its handler returns: for the
	// sideband, once the hang-up has closed it.
	for {
		if _, err := sb.Read(ctx); err != nil {
			if realtime.CloseStatus(err) != 1000 {
				t.Errorf("sideband after the hang-up: %v, want a normal closure", err)
			}
			break
		}
	}
	var reqs []openaitest.Request
	for ctx.Err() == nil {
		reqs = fake.Requests()
		if slices.ContainsFunc(reqs, func(r openaitest.Request) bool { return r.Method == http.MethodGet }) {
			break
		}
		select {
		case <-ctx.Done():
		case <-time.After(10 * time.Millisecond):
		}
	}
	seen := map[string]bool{}
	for _, r := range reqs {
		if !strings.HasPrefix(r.Header.Get("User-Agent"), "OpenAI/Go") {
			t.Errorf("%s %s was not sent by the SDK (User-Agent %q)", r.Method, r.Path, r.Header.Get("User-Agent"))
		}
		if r.Auth != "api_key" {
			t.Errorf("%s %s authenticated with %q, want the server key", r.Method, r.Path, r.Auth)
		}
		seen[r.Method+" "+r.Path] = true
	}
	for _, want := range []string{
		"POST /v1/realtime/client_secrets", "POST /v1/realtime/calls", "GET /v1/realtime",
		"POST /v1/realtime/calls/" + call.ID + "/hangup",
	} {
		if !seen[want] {
			t.Errorf("no %s request; saw %v", want, seen)
		}
	}
	noBeta(t, fake)
}

// TestKeyNeverShows runs every call into faults — a wrong key, an unknown
// call, a server error whose body echoes the request's Authorization, a
// refused connection, a sideband dropped mid-stream — and checks that no
// error, whatever the formatting, and no log line carries the key.
func TestKeyNeverShows(t *testing.T) {
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	const key = "sk-proj-SECRET-4f2a9c1e7b3d5a8f"
	var logs lockedBuffer // the clients may log from their own goroutines
	log := slog.New(slog.NewJSONHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))

	var errs []error
	record := func(what string, err error) {
		t.Helper()
		if err == nil {
			t.Errorf("%s: no error", what)
			return
		}
		errs = append(errs, err)
		log.Error(what, "error", err)
		log.Error(what, "error", fmt.Sprintf("%+v", err), "go", fmt.Sprintf("%#v", err))
	}

	// The fake knows another key: every call answers 401.
	fake := openaitest.NewServer(openaitest.Config{APIKey: "sk-the-fake-wants-this-one"})
	defer fake.Close()
	wrong := realtime.New(realtime.Config{BaseURL: fake.URL, APIKey: key, Logger: log})
	defer wrong.CloseIdleConnections()
	_, err := wrong.CreateClientSecret(ctx, testSession(), time.Minute)
	if !realtime.IsAPIError(err, http.StatusUnauthorized, "") {
		t.Errorf("client secret with a wrong key = %v, want 401", err)
	}
	record("client secret, wrong key", err)
	_, err = wrong.CreateCall(ctx, "v=0\r\n", testSession())
	record("call, wrong key", err)
	record("hang-up, wrong key", wrong.Hangup(ctx, "rtc_0123"))
	_, err = wrong.DialSideband(ctx, "rtc_0123")
	if !realtime.IsAPIError(err, http.StatusUnauthorized, "") {
		t.Errorf("sideband with a wrong key = %v, want 401", err)
	}
	record("sideband, wrong key", err)

	// The right key, an unknown call: 404 call_id_not_found, for the
	// sideband's refused handshake too.
	fake2 := openaitest.NewServer(openaitest.Config{APIKey: key})
	defer fake2.Close()
	right := realtime.New(realtime.Config{BaseURL: fake2.URL, APIKey: key, Logger: log})
	defer right.CloseIdleConnections()
	err = right.Hangup(ctx, "rtc_unknown")
	if !realtime.IsAPIError(err, http.StatusNotFound, realtime.CodeCallNotFound) {
		t.Errorf("hang-up of an unknown call = %v, want 404 call_id_not_found", err)
	}
	record("hang-up, unknown call", err)
	_, err = right.DialSideband(ctx, "rtc_unknown")
	if !realtime.IsAPIError(err, http.StatusNotFound, realtime.CodeCallNotFound) {
		t.Errorf("sideband of an unknown call = %v, want 404 call_id_not_found", err)
	}
	record("sideband, unknown call", err)

	// A server that fails and echoes the Authorization header back.
	echo := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("X-Echo", r.Header.Get("Authorization"))
		w.WriteHeader(http.StatusInternalServerError)
		fmt.Fprintf(w, `{"error":{"message":"bad auth %s","type":"server_error","code":null,"param":null}}`, r.Header.Get("Authorization"))
	}))
	defer echo.Close()
	failing := realtime.New(realtime.Config{BaseURL: echo.URL, APIKey: key, Logger: log})
	defer failing.CloseIdleConnections()
	_, err = failing.CreateClientSecret(ctx, testSession(), 0)
	if !realtime.IsAPIError(err, http.StatusInternalServerError, "") {
		t.Errorf("client secret from a failing server = %v, want 500", err)
	}
	record("client secret, server error", err)
	_, err = failing.CreateCall(ctx, "v=0\r\n", testSession())
	record("call, server error", err)
	record("hang-up, server error", failing.Hangup(ctx, "rtc_0123"))
	_, err = failing.DialSideband(ctx, "rtc_0123")
	if !realtime.IsAPIError(err, http.StatusInternalServerError, "") {
		t.Errorf("sideband from a failing server = %v, want 500", err)
	}
	record("sideband, server error", err)

	// Nobody listens.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	gone := "http://" + ln.Addr().String()
	ln.Close()
	refused := realtime.New(realtime.Config{BaseURL: gone, APIKey: key, Logger: log})
	defer refused.CloseIdleConnections()
	_, err = refused.CreateClientSecret(ctx, testSession(), 0)
	record("client secret, connection refused", err)
	record("hang-up, connection refused", refused.Hangup(ctx, "rtc_0123"))
	_, err = refused.DialSideband(ctx, "rtc_0123")
	record("sideband, connection refused", err)

	// A sideband dropped without a close frame.
	dropped := openaitest.NewServer(openaitest.Config{APIKey: key, Script: []openaitest.Step{{DropSideband: true}}})
	defer dropped.Close()
	dc := realtime.New(realtime.Config{BaseURL: dropped.URL, APIKey: key, Logger: log})
	defer dc.CloseIdleConnections()
	browser := newBrowser(t, ctx)
	call, err := dc.CreateCall(ctx, browser.Offer(), testSession())
	if err != nil {
		t.Fatal(err)
	}
	sb, err := dc.DialSideband(ctx, call.ID)
	if err != nil {
		t.Fatal(err)
	}
	defer sb.Close()
	if err := browser.Accept(call.AnswerSDP); err != nil {
		t.Fatal(err)
	}
	for {
		_, err = sb.Read(ctx)
		if err != nil {
			break
		}
	}
	if ctx.Err() != nil {
		t.Fatalf("the sideband never broke: %v", err)
	}
	if got := realtime.CloseStatus(err); got != -1 {
		t.Errorf("dropped sideband close status = %d, want -1 (no close frame)", got)
	}
	record("sideband read, dropped", err)

	for _, err := range errs {
		for _, s := range []string{err.Error(), fmt.Sprintf("%v", err), fmt.Sprintf("%+v", err), fmt.Sprintf("%#v", err)} {
			if strings.Contains(s, key) {
				t.Errorf("an error shows the key: %s", s)
			}
		}
		var api *realtime.APIError
		if errors.As(err, &api) && strings.Contains(fmt.Sprintf("%#v", *api), key) {
			t.Errorf("an APIError holds the key: %#v", *api)
		}
	}
	if strings.Contains(logs.String(), key) {
		t.Errorf("the logs show the key:\n%s", logs.String())
	}
	if len(errs) < 14 {
		t.Errorf("only %d faults were checked", len(errs))
	}
}

func TestVoiceDefaults(t *testing.T) {
	got := realtime.Voice{Voice: "cedar"}.WithDefaults()
	want := realtime.Voice{Model: "gpt-realtime", Voice: "cedar", TranscriptionModel: "gpt-4o-transcribe"}
	if got != want {
		t.Errorf("WithDefaults = %+v, want %+v", got, want)
	}
}

// lockedBuffer is a log sink safe for writers on other goroutines and a
// reader in the test.
type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.String()
}
