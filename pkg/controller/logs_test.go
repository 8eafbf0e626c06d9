package controller

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/interviewvm/controlplane/pkg/session"
)

// httpCall is one request of the log test and the request id the
// controller answered with.
type httpCall struct {
	method, path string
	status       int
	requestID    string
}

// callRecorded sends a request and records its X-Request-Id answer.
func (c *controller) callRecorded(t *testing.T, calls *[]httpCall, method, path, tok string, body any, want int) map[string]any {
	t.Helper()
	var r io.Reader
	if body != nil {
		j, _ := json.Marshal(body)
		r = bytes.NewReader(j)
	}
	req, _ := http.NewRequest(method, c.base+path, r)
	if tok != "" {
		req.Header.Set("Authorization", "Bearer "+tok)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	*calls = append(*calls, httpCall{method: method, path: path, status: resp.StatusCode, requestID: resp.Header.Get("X-Request-Id")})
	if want != 0 && resp.StatusCode != want {
		t.Fatalf("%s %s = %d %s, want %d", method, path, resp.StatusCode, raw, want)
	}
	var out map[string]any
	_ = json.Unmarshal(raw, &out)
	return out
}

// sessionToken reads the per-session token from the environment of the
// interview's sessionvm process.
func sessionToken(t *testing.T, sessionID string) string {
	t.Helper()
	pids := vmPIDs(t, sessionID)
	if len(pids) != 1 {
		t.Fatalf("sessionvm processes of %s = %v, want one", sessionID, pids)
	}
	environ, err := os.ReadFile(fmt.Sprintf("/proc/%d/environ", pids[0]))
	if err != nil {
		t.Fatal(err)
	}
	for _, kv := range bytes.Split(environ, []byte{0}) {
		if v, ok := bytes.CutPrefix(kv, []byte(session.EnvSessionToken+"=")); ok && len(v) > 0 {
			return string(v)
		}
	}
	t.Fatalf("no %s in the environment of sessionvm %d", session.EnvSessionToken, pids[0])
	return ""
}

// leaked returns the first piece of secret, at least window bytes long,
// that text contains, or "". Checking windows, not only the whole value,
// catches a prefix or a fragment logged "for debugging".
func leaked(text, secret string, window int) string {
	if len(secret) <= window {
		if strings.Contains(text, secret) {
			return secret
		}
		return ""
	}
	for i := 0; i+window <= len(secret); i++ {
		if strings.Contains(text, secret[i:i+window]) {
			return secret[i : i+window]
		}
	}
	return ""
}

// TestLogsCarryNoSecrets runs an interview end to end at debug level and
// reads every line the controller logged, its session VM's included
// (pkg/localvm forwards the VM's stderr into the controller's logger).
func TestLogsCarryNoSecrets(t *testing.T) {
	const (
		flyToken  = "FlyV1 fm2_lOgLeAkCaNaRy0fLyT0k3nXyZ0123456789abcdef"
		openAIKey = "sk-proj-LoGlEaKcAnArY0pEnAiKeY0123456789abcdefghij"
	)
	// Also in the process environment, should anything read it there.
	t.Setenv("OPENAI_API_KEY", openAIKey)
	t.Setenv("FLY_API_TOKEN", flyToken)
	c := startController(t, map[string]string{"FLY_API_TOKEN": flyToken, "OPENAI_API_KEY": openAIKey})
	tenant := uuid.NewString()
	tok := token(t, tenant, "recruiter")
	var calls []httpCall

	pos := c.callRecorded(t, &calls, "POST", "/v1/positions", tok, map[string]any{
		"title": "Backend engineer", "competencies": []map[string]any{{"name": "Go", "weight": 1}}}, 201)
	cand := c.callRecorded(t, &calls, "POST", "/v1/candidates", tok, map[string]any{"full_name": "Grace Hopper", "email": "grace@example.com"}, 201)
	iv := c.callRecorded(t, &calls, "POST", "/v1/interviews", tok, map[string]any{"candidate_id": cand["id"], "position_id": pos["id"]}, 201)
	id := iv["id"].(string)
	ans := c.callRecorded(t, &calls, "POST", "/v1/interviews/"+id+"/start?wait=30", tok, nil, 200)
	access := ans["connect"].(map[string]any)["access_token"].(string)
	vmToken := sessionToken(t, id)
	pids := vmPIDs(t, id)

	// The candidate's browser uses the access token on the session routes
	// (the simulated interviewer has no client secrets: 409 is its answer).
	c.callRecorded(t, &calls, "POST", "/v1/interviews/"+id+"/session/token", access, nil, 0)
	c.callRecorded(t, &calls, "GET", "/v1/interviews/"+id+"/events", access, nil, 0)
	// Refused credentials are a favourite place to log a token.
	forged := tok[:strings.LastIndexByte(tok, '.')+1] + "c2lnbmF0dXJlLW9mLWEtZm9yZ2VkLXRva2VuLTAxMjM0NTY3"
	c.callRecorded(t, &calls, "GET", "/v1/interviews/"+id, forged, nil, 401)
	c.callRecorded(t, &calls, "GET", "/v1/interviews/"+id, access+"x", nil, 401)
	c.callRecorded(t, &calls, "GET", "/internal/v1/sessions/"+id+"/config", vmToken+"x", nil, 401)
	c.callRecorded(t, &calls, "GET", "/v1/interviews/"+id, tok, nil, 200)

	c.callRecorded(t, &calls, "POST", "/v1/interviews/"+id+"/end", tok, nil, 202)
	eventually(t, "the interview to complete", 30*time.Second, func() bool {
		got := c.mustCall(t, 200, "GET", "/v1/interviews/"+id, tok, nil)
		return got["status"] == "completed"
	})
	for _, p := range pids {
		eventually(t, "the VM to exit", 30*time.Second, func() bool { return gone(p) })
	}
	// Its last lines, forwarded, and the destroy are logged by now.
	eventually(t, "the machine to be recorded destroyed", 10*time.Second, func() bool {
		got := c.mustCall(t, 200, "GET", "/v1/interviews/"+id, tok, nil)
		return got["machine"].(map[string]any)["state"] == "destroyed"
	})
	logs := c.logs.String()

	// 1. No secret, nor any 16-byte piece of one.
	jwtParts := func(jwt string) []string { return strings.Split(jwt, ".")[1:] } // the header is the same in every JWT
	secrets := map[string][]string{
		"tenant JWT":         append([]string{tok}, jwtParts(tok)...),
		"forged JWT":         {forged[strings.LastIndexByte(forged, '.')+1:]},
		"interview access":   append([]string{access}, jwtParts(access)...),
		"session token":      {vmToken},
		"Fly API token":      {flyToken},
		"OpenAI API key":     {openAIKey},
		"JWT signing secret": {testSecret},
	}
	for what, parts := range secrets {
		for _, part := range parts {
			if piece := leaked(logs, part, 16); piece != "" {
				for _, line := range strings.Split(logs, "\n") {
					if strings.Contains(line, piece) {
						t.Errorf("the %s appears in a log line (%q): %s", what, piece, line)
						break
					}
				}
			}
		}
	}

	// 2. Every line about the interview says which, in session_id; lines
	// about its machine also say which machine.
	var lines []map[string]any
	vmLines := 0
	for _, raw := range strings.Split(strings.TrimSpace(logs), "\n") {
		var line map[string]any
		if err := json.Unmarshal([]byte(raw), &line); err != nil {
			t.Errorf("log line is not JSON: %q", raw)
			continue
		}
		lines = append(lines, line)
		if !strings.Contains(raw, id) {
			continue
		}
		if line["session_id"] != id {
			t.Errorf("log line mentions interview %s without session_id: %s", id, raw)
		}
		if line["msg"] == "vm output" {
			vmLines++
		}
	}
	if vmLines == 0 {
		t.Errorf("no line of the session VM was forwarded into the controller's log:\n%s", logs)
	}

	// 3. Every access line has a request id, and each answer's
	// X-Request-Id names its access line.
	byRequestID := map[string]map[string]any{}
	for _, line := range lines {
		if line["msg"] != "http request" {
			continue
		}
		rid, _ := line["request_id"].(string)
		if rid == "" {
			t.Errorf("access line without request_id: %v", line)
			continue
		}
		if byRequestID[rid] != nil {
			t.Errorf("request id %s on two access lines", rid)
		}
		byRequestID[rid] = line
	}
	for _, call := range calls {
		if call.requestID == "" {
			t.Errorf("%s %s (%d) answered without X-Request-Id", call.method, call.path, call.status)
			continue
		}
		line := byRequestID[call.requestID]
		if line == nil {
			t.Errorf("%s %s: no access line with request_id %s", call.method, call.path, call.requestID)
			continue
		}
		if line["method"] != call.method || line["status"] != float64(call.status) {
			t.Errorf("%s %s = %d: its access line says %v", call.method, call.path, call.status, line)
		}
	}
}
