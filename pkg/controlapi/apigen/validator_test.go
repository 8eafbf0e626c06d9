package apigen

import (
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/labstack/echo/v4"
	"github.com/labstack/echo/v4/middleware"

	"github.com/interviewvm/controlplane/pkg/session"
)

// stub implements ServerInterface: every operation answers 200 with the
// operation's name and the request body it received, so the tests see the
// validator let a request through and leave its body readable.
type stub struct{}

func (stub) answer(c echo.Context, op string) error {
	body, err := io.ReadAll(c.Request().Body)
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, map[string]string{"op": op, "body": string(body)})
}

func (s stub) GetHealthz(c echo.Context) error                 { return s.answer(c, "getHealthz") }
func (s stub) GetVMConfig(c echo.Context, _ SessionID) error   { return s.answer(c, "getVMConfig") }
func (s stub) ReportVMEnded(c echo.Context, _ SessionID) error { return s.answer(c, "reportVMEnded") }
func (s stub) ReportVMHeartbeat(c echo.Context, _ SessionID) error {
	return s.answer(c, "reportVMHeartbeat")
}
func (s stub) ReportVMReady(c echo.Context, _ SessionID) error { return s.answer(c, "reportVMReady") }
func (s stub) IngestTranscript(c echo.Context, _ SessionID) error {
	return s.answer(c, "ingestTranscript")
}
func (s stub) GetOpenAPISpec(c echo.Context) error { return s.answer(c, "getOpenAPISpec") }
func (s stub) GetReadyz(c echo.Context) error      { return s.answer(c, "getReadyz") }
func (s stub) CreateCandidate(c echo.Context, _ CreateCandidateParams) error {
	return s.answer(c, "createCandidate")
}
func (s stub) GetCandidate(c echo.Context, _ ID) error { return s.answer(c, "getCandidate") }
func (s stub) CreateInterview(c echo.Context, _ CreateInterviewParams) error {
	return s.answer(c, "createInterview")
}
func (s stub) GetInterview(c echo.Context, _ ID) error    { return s.answer(c, "getInterview") }
func (s stub) CancelInterview(c echo.Context, _ ID) error { return s.answer(c, "cancelInterview") }
func (s stub) EndInterview(c echo.Context, _ ID) error    { return s.answer(c, "endInterview") }
func (s stub) ListInterviewEvents(c echo.Context, _ ID) error {
	return s.answer(c, "listInterviewEvents")
}
func (s stub) ReportSessionCall(c echo.Context, _ ID) error { return s.answer(c, "reportSessionCall") }
func (s stub) PostSessionSDP(c echo.Context, _ ID) error    { return s.answer(c, "postSessionSDP") }
func (s stub) CreateSessionToken(c echo.Context, _ ID) error {
	return s.answer(c, "createSessionToken")
}
func (s stub) CreatePosition(c echo.Context, _ CreatePositionParams) error {
	return s.answer(c, "createPosition")
}
func (s stub) GetPosition(c echo.Context, _ ID) error { return s.answer(c, "getPosition") }
func (s stub) CreateAPIKey(c echo.Context, _ CreateAPIKeyParams) error {
	return s.answer(c, "createAPIKey")
}
func (s stub) ListAPIKeys(c echo.Context, _ ListAPIKeysParams) error {
	return s.answer(c, "listAPIKeys")
}
func (s stub) DeleteAPIKey(c echo.Context, _ ID) error { return s.answer(c, "deleteAPIKey") }
func (s stub) ListPositions(c echo.Context, _ ListPositionsParams) error {
	return s.answer(c, "listPositions")
}
func (s stub) ListCandidates(c echo.Context, _ ListCandidatesParams) error {
	return s.answer(c, "listCandidates")
}
func (s stub) ListInterviews(c echo.Context, _ ListInterviewsParams) error {
	return s.answer(c, "listInterviews")
}
func (s stub) StartInterview(c echo.Context, _ ID, _ StartInterviewParams) error {
	return s.answer(c, "startInterview")
}
func (s stub) GetTranscript(c echo.Context, _ ID, _ GetTranscriptParams) error {
	return s.answer(c, "getTranscript")
}
func (s stub) UpdatePosition(c echo.Context, _ ID) error  { return s.answer(c, "updatePosition") }
func (s stub) DeletePosition(c echo.Context, _ ID) error  { return s.answer(c, "deletePosition") }
func (s stub) UpdateCandidate(c echo.Context, _ ID) error { return s.answer(c, "updateCandidate") }
func (s stub) DeleteCandidate(c echo.Context, _ ID) error { return s.answer(c, "deleteCandidate") }
func (s stub) UpdateInterview(c echo.Context, _ ID) error { return s.answer(c, "updateInterview") }
func (s stub) GetInsights(c echo.Context, _ ID) error     { return s.answer(c, "getInsights") }
func (s stub) RerunInsights(c echo.Context, _ ID) error   { return s.answer(c, "rerunInsights") }
func (s stub) DeleteInterview(c echo.Context, _ ID) error { return s.answer(c, "deleteInterview") }
func (s stub) StreamTranscript(c echo.Context, _ ID, _ StreamTranscriptParams) error {
	return s.answer(c, "streamTranscript")
}

// testServer mounts the generated handlers behind the validator, with an
// error handler writing the contract's error JSON as controlapi does.
func testServer(opts ValidatorOptions) *echo.Echo {
	e := echo.New()
	e.HTTPErrorHandler = func(err error, c echo.Context) {
		status, body := http.StatusInternalServerError, ErrorResponse{Error: ErrorDetail{Code: "internal", Message: err.Error()}}
		var se *session.Error
		var he *echo.HTTPError
		switch {
		case errors.As(err, &se):
			body.Error = ErrorDetail{Code: se.Code, Message: se.Message}
			status = map[string]int{session.EINVALID: 400, session.ETOOLARGE: 413}[se.Code]
		case errors.As(err, &he):
			status, body.Error.Code = he.Code, "http_error"
		}
		_ = c.JSON(status, body)
	}
	e.Use(Validator(opts))
	RegisterHandlers(e, stub{})
	e.GET("/metrics", func(c echo.Context) error { return c.String(http.StatusOK, "# metrics\n") })
	return e
}

const (
	uuid4 = "3f2a9c1e-7b4d-4e5f-9a12-0123456789ab"
	uuid7 = "01936f8e-7b4d-7e5f-9a12-0123456789ab"
)

type call struct {
	method, path, body string
	header             map[string]string
}

func (c call) do(t *testing.T, e *echo.Echo) *httptest.ResponseRecorder {
	t.Helper()
	var body io.Reader
	if c.body != "" {
		body = strings.NewReader(c.body)
	}
	req := httptest.NewRequest(c.method, c.path, body)
	if c.body != "" && c.header == nil {
		req.Header.Set("Content-Type", "application/json")
	}
	for k, v := range c.header {
		req.Header.Set(k, v)
	}
	rec := httptest.NewRecorder()
	e.ServeHTTP(rec, req)
	return rec
}

const goodPosition = `{"title":"Backend engineer","description":"Go","competencies":[{"name":"Go","weight":0.6},{"name":"SQL","weight":3,"description":"Postgres"}]}`

func TestValidatorAccepts(t *testing.T) {
	e := testServer(ValidatorOptions{})
	bearer := map[string]string{"Authorization": "Bearer whatever"}
	sdp := map[string]string{"Content-Type": "application/sdp"}
	tests := map[string]call{
		"create position":                  {method: "POST", path: "/v1/positions", body: goodPosition},
		"create position, no Content-Type": {method: "POST", path: "/v1/positions", body: goodPosition, header: map[string]string{}},
		"create position, charset":         {method: "POST", path: "/v1/positions", body: goodPosition, header: map[string]string{"Content-Type": "application/json; charset=utf-8"}},
		"list positions":                   {method: "GET", path: "/v1/positions?limit=100&cursor=abc"},
		"get position, bearer":             {method: "GET", path: "/v1/positions/" + uuid4, header: bearer},
		"uuid v7":                          {method: "GET", path: "/v1/positions/" + uuid7},
		"upper-case uuid":                  {method: "GET", path: "/v1/candidates/" + strings.ToUpper(uuid4)},
		"create candidate":                 {method: "POST", path: "/v1/candidates", body: `{"full_name":"Ada Lovelace","email":"ada@example.com"}`},
		"create interview":                 {method: "POST", path: "/v1/interviews", body: `{"candidate_id":"` + uuid4 + `","position_id":"` + uuid7 + `"}`},
		"create interview, all fields":     {method: "POST", path: "/v1/interviews", body: `{"candidate_id":"` + uuid4 + `","position_id":"` + uuid4 + `","company_id":"` + uuid4 + `","architecture":"hybrid","max_duration_s":1800}`},
		"list interviews by status":        {method: "GET", path: "/v1/interviews?status=in_progress&limit=1"},
		"start":                            {method: "POST", path: "/v1/interviews/" + uuid4 + "/start"},
		"start, wait 0":                    {method: "POST", path: "/v1/interviews/" + uuid4 + "/start?wait=0"},
		"start, wait 60":                   {method: "POST", path: "/v1/interviews/" + uuid4 + "/start?wait=60", header: map[string]string{"Idempotency-Key": strings.Repeat("k", 255)}},
		"start, wait 2.5":                  {method: "POST", path: "/v1/interviews/" + uuid4 + "/start?wait=2.5"},
		"end":                              {method: "POST", path: "/v1/interviews/" + uuid4 + "/end"},
		"cancel":                           {method: "POST", path: "/v1/interviews/" + uuid4 + "/cancel"},
		"events":                           {method: "GET", path: "/v1/interviews/" + uuid4 + "/events"},
		"transcript":                       {method: "GET", path: "/v1/interviews/" + uuid4 + "/transcript?after_seq=0"},
		"stream, resumed":                  {method: "GET", path: "/v1/interviews/" + uuid4 + "/transcript/stream", header: map[string]string{"Last-Event-ID": "42"}},
		"sdp":                              {method: "POST", path: "/v1/interviews/" + uuid4 + "/session/sdp", body: "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\n", header: sdp},
		"token":                            {method: "POST", path: "/v1/interviews/" + uuid4 + "/session/token"},
		"call":                             {method: "POST", path: "/v1/interviews/" + uuid4 + "/session/call", body: `{"call_id":"rtc_123"}`},
		"vm config":                        {method: "GET", path: "/internal/v1/sessions/" + uuid4 + "/config"},
		"vm ready, no body":                {method: "POST", path: "/internal/v1/sessions/" + uuid4 + "/ready"},
		"vm ready":                         {method: "POST", path: "/internal/v1/sessions/" + uuid4 + "/ready", body: `{"machine_id":"m1"}`},
		"vm heartbeat, no body":            {method: "POST", path: "/internal/v1/sessions/" + uuid4 + "/heartbeat"},
		"vm heartbeat":                     {method: "POST", path: "/internal/v1/sessions/" + uuid4 + "/heartbeat", body: `{"last_seq":3,"acked_seq":2,"buffered_segments":1,"retries":0,"sideband":"open"}`},
		"vm transcript":                    {method: "POST", path: "/internal/v1/sessions/" + uuid4 + "/transcript", body: `{"segments":[{"seq":1,"speaker":"interviewer","text":"Hello"},{"seq":2,"speaker":"candidate","text":"","item_id":"item_2","failed":true}]}`},
		"vm ended":                         {method: "POST", path: "/internal/v1/sessions/" + uuid4 + "/ended", body: `{"reason":"completed","last_seq":0}`},
		"healthz":                          {method: "GET", path: "/healthz"},
		"readyz":                           {method: "GET", path: "/readyz"},
		"openapi":                          {method: "GET", path: "/openapi.yaml"},
		"metrics, not in the spec":         {method: "GET", path: "/metrics"},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			rec := tc.do(t, e)
			if rec.Code != http.StatusOK {
				t.Fatalf("%s %s: status %d, want 200: %s", tc.method, tc.path, rec.Code, rec.Body)
			}
			if tc.path == "/metrics" {
				return
			}
			var got struct{ Body string }
			if err := json.Unmarshal(rec.Body.Bytes(), &got); err != nil {
				t.Fatal(err)
			}
			if got.Body != tc.body {
				t.Errorf("handler read body %q, want %q", got.Body, tc.body)
			}
		})
	}
}

func TestValidatorRejects(t *testing.T) {
	e := testServer(ValidatorOptions{MaxBodyBytes: 4096})
	iv := "/v1/interviews/" + uuid4
	vm := "/internal/v1/sessions/" + uuid4
	tests := map[string]struct {
		call
		status  int
		message string // a part of the error message
	}{
		"wrong type": {call{method: "POST", path: "/v1/positions",
			body: `{"title":"T","competencies":[{"name":"Go","weight":"heavy"}]}`}, 400, "competencies[0].weight: value must be a number"},
		"weight zero": {call{method: "POST", path: "/v1/positions",
			body: `{"title":"T","competencies":[{"name":"Go","weight":0}]}`}, 400, "competencies[0].weight"},
		"missing required field": {call{method: "POST", path: "/v1/positions",
			body: `{"competencies":[{"name":"Go","weight":1}]}`}, 400, "title is required"},
		"missing nested field": {call{method: "POST", path: "/v1/positions",
			body: `{"title":"T","competencies":[{"weight":1}]}`}, 400, "competencies[0].name is required"},
		"blank title": {call{method: "POST", path: "/v1/positions",
			body: `{"title":"   ","competencies":[{"name":"Go","weight":1}]}`}, 400, "title: must not be blank"},
		"title too long": {call{method: "POST", path: "/v1/positions",
			body: `{"title":"` + strings.Repeat("t", 201) + `","competencies":[{"name":"Go","weight":1}]}`}, 400, "title"},
		"no competencies": {call{method: "POST", path: "/v1/positions",
			body: `{"title":"T","competencies":[]}`}, 400, "competencies"},
		"unknown field": {call{method: "POST", path: "/v1/positions",
			body: `{"title":"T","competencies":[{"name":"Go","weight":1}],"salary":1}`}, 400, "salary is not a known field"},
		"malformed JSON": {call{method: "POST", path: "/v1/positions", body: `{"title":`}, 400, "not valid JSON"},
		"no body":        {call{method: "POST", path: "/v1/positions"}, 400, "request body is required"},
		"wrong Content-Type": {call{method: "POST", path: "/v1/positions", body: goodPosition,
			header: map[string]string{"Content-Type": "text/plain"}}, 400, "Content-Type must be JSON"},
		"bad email": {call{method: "POST", path: "/v1/candidates",
			body: `{"full_name":"Ada","email":"ada at example.com"}`}, 400, "email: must be an email address"},
		"unknown enum in body": {call{method: "POST", path: "/v1/interviews",
			body: `{"candidate_id":"` + uuid4 + `","position_id":"` + uuid4 + `","architecture":"cloud"}`}, 400, "architecture: must be one of hybrid"},
		"bad uuid in body": {call{method: "POST", path: "/v1/interviews",
			body: `{"candidate_id":"42","position_id":"` + uuid4 + `"}`}, 400, "candidate_id: must be a UUID"},
		"max_duration_s zero": {call{method: "POST", path: "/v1/interviews",
			body: `{"candidate_id":"` + uuid4 + `","position_id":"` + uuid4 + `","max_duration_s":0}`}, 400, "max_duration_s"},
		"max_duration_s fraction": {call{method: "POST", path: "/v1/interviews",
			body: `{"candidate_id":"` + uuid4 + `","position_id":"` + uuid4 + `","max_duration_s":1.5}`}, 400, "max_duration_s"},
		"unknown enum in query": {call{method: "GET", path: "/v1/interviews?status=sleeping"}, 400,
			`query parameter "status": must be one of scheduled, provisioning`},
		"limit 0":       {call{method: "GET", path: "/v1/positions?limit=0"}, 400, `query parameter "limit"`},
		"limit 101":     {call{method: "GET", path: "/v1/candidates?limit=101"}, 400, `query parameter "limit"`},
		"limit letters": {call{method: "GET", path: "/v1/interviews?limit=ten"}, 400, `query parameter "limit": must be an integer`},
		"bad uuid path": {call{method: "GET", path: "/v1/interviews/not-a-uuid"}, 400, `path parameter "id": must be a UUID`},
		"braced uuid path": {call{method: "GET", path: "/v1/positions/%7B" + uuid4 + "%7D"}, 400,
			`path parameter "id": must be a UUID`},
		"undashed uuid path": {call{method: "POST", path: "/v1/interviews/" + strings.ReplaceAll(uuid4, "-", "") + "/start"}, 400,
			`path parameter "id": must be a UUID`},
		"bad uuid, internal": {call{method: "GET", path: "/internal/v1/sessions/x/config"}, 400, `path parameter "id"`},
		"wait above 60":      {call{method: "POST", path: iv + "/start?wait=61"}, 400, `query parameter "wait": number must be at most 60`},
		"wait negative":      {call{method: "POST", path: iv + "/start?wait=-1"}, 400, `query parameter "wait"`},
		"wait not a number":  {call{method: "POST", path: iv + "/start?wait=soon"}, 400, `query parameter "wait": must be a number`},
		"idempotency key too long": {call{method: "POST", path: iv + "/start",
			header: map[string]string{"Idempotency-Key": strings.Repeat("k", 256)}}, 400, `header parameter "Idempotency-Key"`},
		"after_seq negative": {call{method: "GET", path: iv + "/transcript?after_seq=-1"}, 400, `query parameter "after_seq"`},
		"bad Last-Event-ID": {call{method: "GET", path: iv + "/transcript/stream",
			header: map[string]string{"Last-Event-ID": "seven"}}, 400, `header parameter "Last-Event-ID"`},
		"sdp as JSON":   {call{method: "POST", path: iv + "/session/sdp", body: `{"sdp":"v=0"}`}, 400, "Content-Type must be application/sdp"},
		"empty call id": {call{method: "POST", path: iv + "/session/call", body: `{"call_id":""}`}, 400, "call_id"},
		"seq 0": {call{method: "POST", path: vm + "/transcript",
			body: `{"segments":[{"seq":0,"speaker":"candidate","text":"hi"}]}`}, 400, "segments[0].seq"},
		"unknown speaker": {call{method: "POST", path: vm + "/transcript",
			body: `{"segments":[{"seq":1,"speaker":"narrator","text":"hi"}]}`}, 400, "segments[0].speaker: must be one of candidate, interviewer"},
		"empty batch": {call{method: "POST", path: vm + "/transcript", body: `{"segments":[]}`}, 400, "segments"},
		"ended, unknown reason": {call{method: "POST", path: vm + "/ended",
			body: `{"reason":"bored","last_seq":1}`}, 400, "reason: must be one of"},
		"ended, missing last_seq": {call{method: "POST", path: vm + "/ended",
			body: `{"reason":"completed"}`}, 400, "last_seq is required"},
		"heartbeat, wrong type": {call{method: "POST", path: vm + "/heartbeat", body: `{"last_seq":"3"}`}, 400, "last_seq"},
		"JSON too large": {call{method: "POST", path: "/v1/positions",
			body: `{"title":"T","description":"` + strings.Repeat("d", 5000) + `","competencies":[{"name":"Go","weight":1}]}`}, 413, "larger than 4 KiB"},
		"SDP too large": {call{method: "POST", path: iv + "/session/sdp", body: strings.Repeat("a", 64<<10+1),
			header: map[string]string{"Content-Type": "application/sdp"}}, 413, "larger than 64 KiB"},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			rec := tc.do(t, e)
			var got ErrorResponse
			if err := json.Unmarshal(rec.Body.Bytes(), &got); err != nil {
				t.Fatalf("%d %s: %v", rec.Code, rec.Body, err)
			}
			wantCode := map[int]string{400: session.EINVALID, 413: session.ETOOLARGE}[tc.status]
			if rec.Code != tc.status || got.Error.Code != wantCode || !strings.Contains(got.Error.Message, tc.message) {
				t.Errorf("%s %s: %d %s %q; want %d %s with %q", tc.method, tc.path, rec.Code, got.Error.Code,
					got.Error.Message, tc.status, wantCode, tc.message)
			}
		})
	}
}

// TestValidatorBodyLimits covers bodies of unknown length and echo's own
// BodyLimit in front of the validator, as controlapi mounts it.
func TestValidatorBodyLimits(t *testing.T) {
	big := `{"title":"T","description":"` + strings.Repeat("d", 3000) + `","competencies":[{"name":"Go","weight":1}]}`
	chunked := func(e *echo.Echo, body string) *httptest.ResponseRecorder {
		req := httptest.NewRequest("POST", "/v1/positions", io.MultiReader(strings.NewReader(body)))
		req.ContentLength = -1
		req.Header.Set("Content-Type", "application/json")
		rec := httptest.NewRecorder()
		e.ServeHTTP(rec, req)
		return rec
	}
	t.Run("chunked, over the validator's cap", func(t *testing.T) {
		e := testServer(ValidatorOptions{MaxBodyBytes: 1024})
		if rec := chunked(e, big); rec.Code != http.StatusRequestEntityTooLarge || !strings.Contains(rec.Body.String(), "too_large") {
			t.Errorf("got %d %s, want 413 too_large", rec.Code, rec.Body)
		}
		if rec := chunked(e, goodPosition); rec.Code != http.StatusOK {
			t.Errorf("small chunked body: got %d %s, want 200", rec.Code, rec.Body)
		}
	})
	t.Run("chunked, over echo's BodyLimit", func(t *testing.T) {
		e := testServer(ValidatorOptions{})
		e.Pre(middleware.BodyLimit("1K"))
		if rec := chunked(e, big); rec.Code != http.StatusRequestEntityTooLarge || !strings.Contains(rec.Body.String(), "too_large") {
			t.Errorf("got %d %s, want 413 too_large", rec.Code, rec.Body)
		}
	})
}

func TestValidatorSkipper(t *testing.T) {
	e := testServer(ValidatorOptions{Skipper: func(c echo.Context) bool { return c.Request().Header.Get("X-Skip") != "" }})
	rec := call{method: "GET", path: "/v1/positions?limit=0", header: map[string]string{"X-Skip": "1"}}.do(t, e)
	if rec.Code != http.StatusOK {
		t.Errorf("skipped request: got %d %s, want 200", rec.Code, rec.Body)
	}
}

func (s stub) CreateWebhookEndpoint(c echo.Context, _ CreateWebhookEndpointParams) error {
	return s.answer(c, "createWebhookEndpoint")
}
func (s stub) ListWebhookEndpoints(c echo.Context, _ ListWebhookEndpointsParams) error {
	return s.answer(c, "listWebhookEndpoints")
}
func (s stub) DeleteWebhookEndpoint(c echo.Context, _ ID) error {
	return s.answer(c, "deleteWebhookEndpoint")
}
func (s stub) ListWebhookDeliveries(c echo.Context, _ ID, _ ListWebhookDeliveriesParams) error {
	return s.answer(c, "listWebhookDeliveries")
}
func (s stub) RetryWebhookDelivery(c echo.Context, _ ID, _ DeliveryID) error {
	return s.answer(c, "retryWebhookDelivery")
}
