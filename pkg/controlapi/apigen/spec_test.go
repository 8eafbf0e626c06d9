package apigen

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/getkin/kin-openapi/openapi3"
	"github.com/google/go-cmp/cmp"

	"github.com/interviewvm/controlplane/pkg/session"
)

// Paths from this package's directory, where go test runs.
const (
	specFile    = "../../../api/openapi.yaml"
	configFile  = "../../../api/oapi-codegen.yaml"
	toolsModule = "../../../tools/go.mod"
	genFile     = "apigen.gen.go"
)

func loadFile(t *testing.T) *openapi3.T {
	t.Helper()
	loader := openapi3.NewLoader()
	doc, err := loader.LoadFromFile(specFile)
	if err != nil {
		t.Fatalf("load %s: %v", specFile, err)
	}
	return doc
}

func TestSpecFileIsValid(t *testing.T) {
	doc := loadFile(t)
	if doc.OpenAPI != "3.0.3" {
		t.Errorf("openapi: %q, want 3.0.3", doc.OpenAPI)
	}
	if err := doc.Validate(context.Background()); err != nil {
		t.Fatalf("%s does not validate: %v", specFile, err)
	}
}

// TestSpecConventions checks the contract's rules on every operation, so a
// new route cannot forget them.
func TestSpecConventions(t *testing.T) {
	doc := loadFile(t)
	errorRef := "#/components/schemas/ErrorResponse"
	seen := map[string]bool{}
	for path, item := range doc.Paths.Map() {
		for method, op := range item.Operations() {
			name := method + " " + path
			if op.OperationID == "" || op.Summary == "" || len(op.Tags) != 1 {
				t.Errorf("%s: wants an operationId, a summary and one tag", name)
			}
			if seen[op.OperationID] {
				t.Errorf("%s: operationId %s is not unique", name, op.OperationID)
			}
			seen[op.OperationID] = true
			security := doc.Security
			if op.Security != nil {
				security = *op.Security
			}
			responses := op.Responses.Map()
			var statuses []string
			for status, ref := range responses {
				statuses = append(statuses, status)
				if status != "default" && status < "400" {
					continue
				}
				mt := ref.Value.Content.Get("application/json")
				if mt == nil || mt.Schema == nil || mt.Schema.Ref != errorRef {
					t.Errorf("%s: response %s is not the error JSON", name, status)
				}
			}
			want := []string{}
			params := slices.Concat(item.Parameters, op.Parameters)
			if len(params) > 0 || op.RequestBody != nil {
				want = append(want, "400")
			}
			if len(security) > 0 {
				want = append(want, "401", "default")
			}
			if strings.HasPrefix(path, "/v1/") {
				want = append(want, "403", "429")
			}
			if op.RequestBody != nil {
				want = append(want, "413")
			}
			if strings.Contains(path, "{id}") && strings.HasPrefix(path, "/v1/") {
				want = append(want, "404")
			}
			if strings.HasPrefix(path, "/internal/") {
				want = append(want, "409")
			}
			if _, creates := responses["201"]; creates && op.RequestBody != nil &&
				op.RequestBody.Value.Content.Get("application/json") != nil {
				// Creates keep their answers under an Idempotency-Key.
				if !slices.ContainsFunc(params, func(r *openapi3.ParameterRef) bool { return r.Value.Name == "Idempotency-Key" }) {
					t.Errorf("%s: a create without the Idempotency-Key parameter", name)
				}
				want = append(want, "409", "422")
			}
			for _, s := range want {
				if !slices.Contains(statuses, s) {
					t.Errorf("%s: documents no %s answer", name, s)
				}
			}
			for _, p := range params {
				if p.Value.In == "path" && p.Value.Schema.Value.Format != "uuid" {
					t.Errorf("%s: path parameter %s is not a uuid", name, p.Value.Name)
				}
			}
			if strings.HasPrefix(op.OperationID, "list") && op.OperationID != "listInterviewEvents" {
				for _, p := range []string{"limit", "cursor"} {
					if !slices.ContainsFunc(params, func(r *openapi3.ParameterRef) bool { return r.Value.Name == p }) {
						t.Errorf("%s: a list without the %s parameter", name, p)
					}
				}
				list := responses["200"].Value.Content.Get("application/json").Schema.Value
				if list.Properties["items"] == nil || list.Properties["next_cursor"] == nil ||
					!slices.Equal(list.Required, []string{"items", "next_cursor"}) {
					t.Errorf("%s: a list answers no {items, next_cursor}", name)
				}
			}
			if op.RequestBody != nil {
				if mt := op.RequestBody.Value.Content.Get("application/json"); mt != nil {
					if ap := mt.Schema.Value.AdditionalProperties.Has; ap == nil || *ap {
						t.Errorf("%s: the JSON request body does not refuse unknown fields", name)
					}
				}
			}
		}
	}
	if len(seen) != 42 {
		t.Errorf("%d operations, want 42", len(seen))
	}
}

// asJSON is a document as kin-openapi marshals it, for comparing two
// loads of it.
func asJSON(t *testing.T, doc *openapi3.T) string {
	t.Helper()
	b, err := json.MarshalIndent(doc, "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// TestEmbeddedSpecMatchesFile: the document the generated code embeds, and
// Spec serves, is api/openapi.yaml.
func TestEmbeddedSpecMatchesFile(t *testing.T) {
	want := asJSON(t, loadFile(t))
	embedded, err := GetSpec()
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(want, asJSON(t, embedded)); diff != "" {
		t.Errorf("the embedded spec differs from %s (run go generate ./pkg/controlapi/apigen) (-file +embedded):\n%s", specFile, diff)
	}
	served, err := openapi3.NewLoader().LoadFromData(Spec())
	if err != nil {
		t.Fatalf("Spec() does not load: %v", err)
	}
	if err := served.Validate(context.Background()); err != nil {
		t.Errorf("Spec() does not validate: %v", err)
	}
	public := loadFile(t)
	for path := range public.Paths.Map() {
		if strings.HasPrefix(path, InternalPrefix) {
			public.Paths.Delete(path)
		}
	}
	public.Tags = slices.DeleteFunc(public.Tags, func(t *openapi3.Tag) bool { return t.Name == "internal" })
	delete(public.Components.SecuritySchemes, SchemeSessionToken)
	if diff := cmp.Diff(asJSON(t, public), asJSON(t, served)); diff != "" {
		t.Errorf("Spec() differs from %s without its internal routes (-file +served):\n%s", specFile, diff)
	}
	if bytes.Contains(Spec(), []byte("\n  /internal/")) || bytes.Contains(Spec(), []byte(SchemeSessionToken+":")) {
		t.Errorf("Spec() still describes the internal API")
	}
	if !bytes.Contains(Spec(), []byte("\nopenapi: 3.0.3\ninfo:\n")) {
		t.Errorf("Spec() does not start with the openapi version and info")
	}
}

// TestGeneratedCodeIsCurrent regenerates the code with the pinned
// oapi-codegen and compares it with the committed apigen.gen.go.
func TestGeneratedCodeIsCurrent(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs oapi-codegen")
	}
	goCmd, err := exec.LookPath("go")
	if err != nil {
		t.Fatalf("the go command is needed to run oapi-codegen: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, goCmd, "tool", "-modfile="+toolsModule, "oapi-codegen",
		"-config", configFile, specFile)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	got, err := cmd.Output()
	if err != nil {
		t.Fatalf("%s: %v\n%s", strings.Join(cmd.Args, " "), err, stderr.String())
	}
	want, err := os.ReadFile(genFile)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		out := filepath.Join(t.TempDir(), genFile)
		_ = os.WriteFile(out, got, 0o644)
		diff := cmp.Diff(string(want), string(got))
		if len(diff) > 4000 {
			diff = diff[:4000] + "\n…"
		}
		t.Errorf("%s is stale: run go generate ./pkg/controlapi/apigen (fresh output: %s) (-committed +fresh):\n%s",
			genFile, out, diff)
	}
}

func TestSecurity(t *testing.T) {
	got := Security()
	want := map[string][]string{
		"createPosition":     {SchemeTenantAPIKey, SchemeTenantJWT},
		"deleteAPIKey":       {SchemeTenantAPIKey, SchemeTenantJWT},
		"streamTranscript":   {SchemeInterviewAccessQuery, SchemeTenantAPIKey, SchemeTenantJWT},
		"updateInterview":    {SchemeTenantAPIKey, SchemeTenantJWT},
		"getInsights":        {SchemeTenantAPIKey, SchemeTenantJWT},
		"rerunInsights":      {SchemeTenantAPIKey, SchemeTenantJWT},
		"deleteCandidate":    {SchemeTenantAPIKey, SchemeTenantJWT},
		"postSessionSDP":     {SchemeInterviewAccessToken, SchemeTenantJWT},
		"createSessionToken": {SchemeInterviewAccessToken, SchemeTenantJWT},
		"reportSessionCall":  {SchemeInterviewAccessToken, SchemeTenantJWT},
		"getVMConfig":        {SchemeSessionToken},
		"ingestTranscript":   {SchemeSessionToken},
		"getHealthz":         {},
		"getReadyz":          {},
		"getOpenAPISpec":     {},
	}
	for op, schemes := range want {
		if !slices.Equal(got[op], schemes) {
			t.Errorf("Security()[%s] = %v, want %v", op, got[op], schemes)
		}
	}
	if len(got) != 42 {
		t.Errorf("Security() has %d operations, want 42", len(got))
	}
	got["createPosition"][0] = "changed"
	if Security()["createPosition"][0] != SchemeTenantAPIKey {
		t.Error("Security() shares its slices between calls")
	}
}

// TestSessionJSONMatchesSchemas: pkg/session's wire types, whose JSON the
// handlers write, match the schemas of the contract.
func TestSessionJSONMatchesSchemas(t *testing.T) {
	doc, err := GetSpec()
	if err != nil {
		t.Fatal(err)
	}
	now := time.Date(2026, 11, 26, 10, 0, 0, 123456789, time.UTC)
	id, tenant := "3f2a9c1e-7b4d-4e5f-9a12-0123456789ab", "7b4d0e5f-9a12-4c3b-8d6e-2f1a0b9c8d7e"
	reason, seq := session.ReasonEndedByUser, int64(3)
	full := session.Interview{
		ID: id, TenantID: tenant, CandidateID: id, PositionID: id, CompanyID: &id,
		Status: session.StateCompleted, EndReason: &reason, Architecture: session.ArchitectureHybrid,
		MaxDurationS: 2700, Machine: &session.Machine{ID: "m1", Name: "interview-hybrid-3f2a9c1e-7b4d0e5f9a12",
			Region: "ams", State: session.MachineStarted, Provider: "fly", Addr: "10.0.0.1:8080"},
		CreatedAt: now, StartedAt: &now, ReadyAt: &now, EndedAt: &now, LastSeqReported: &seq,
	}
	scheduled := session.Interview{ID: id, TenantID: tenant, CandidateID: id, PositionID: id,
		Status: session.StateScheduled, Architecture: session.ArchitectureHybrid, MaxDurationS: 60, CreatedAt: now}
	position := session.PositionRecord{ID: id, TenantID: tenant, Title: "T", CreatedAt: now,
		Competencies: []session.Competency{{Name: "Go", Weight: 0.5}, {Name: "SQL", Weight: 2, Description: "d"}}}
	apiKey := session.APIKey{ID: id, TenantID: tenant, Name: "ATS", Role: "viewer", Prefix: "ik_abcdefgh", CreatedAt: now}
	used := apiKey
	used.LastUsedAt = &now
	endpoint := session.WebhookEndpoint{ID: id, TenantID: tenant, URL: "https://example.com/h", Events: []string{"interview.completed"}, CreatedAt: now}
	code := 500
	delivery := session.WebhookDelivery{ID: id, EndpointID: id, InterviewID: id, MessageID: "msg_x", EventType: "interview.completed",
		Status: "pending", Attempts: 1, LastStatusCode: &code, LastError: "answered 500", LastAttemptAt: &now, NextAttemptAt: &now, CreatedAt: now}
	tests := map[string]struct {
		schema string
		value  any
	}{
		"interview":           {"Interview", full},
		"scheduled interview": {"Interview", scheduled},
		"position":            {"Position", position},
		"candidate":           {"Candidate", session.Candidate{ID: id, TenantID: tenant, FullName: "Ada", Email: "a@b.c", CreatedAt: now}},
		"event":               {"Event", session.Event{At: now, From: session.StateReady, To: session.StateEnding, Reason: "ended_by_user", Actor: session.ActorUser}},
		"event, no reason":    {"Event", session.Event{At: now, From: session.StateScheduled, To: session.StateProvisioning, Actor: session.ActorController}},
		"segment":             {"TranscriptSegment", session.Segment{Seq: 1, Speaker: session.SpeakerCandidate, Text: "hi", ItemID: "item_1", Failed: true, Created: now}},
		"segment, minimal":    {"TranscriptSegment", session.Segment{Seq: 2, Speaker: session.SpeakerInterviewer, Text: "", Created: now}},
		"segment input":       {"SegmentInput", session.Segment{Seq: 2, Speaker: session.SpeakerInterviewer, Text: "x", ItemID: "i"}},
		"vm config": {"VMConfig", session.VMConfig{SessionID: id, TenantID: tenant, Architecture: "hybrid", Realtime: "openai",
			Deadline: now, MaxDurationS: 2700, HeartbeatIntervalMS: 5000, IdleTimeoutMS: 0,
			Position: session.Position{Title: "T", Competencies: position.Competencies}}},
		"ready":              {"ReadyRequest", session.ReadyRequest{MachineID: "m1"}},
		"heartbeat":          {"Heartbeat", session.Heartbeat{LastSeq: 3, AckedSeq: 2, BufferedSegments: 1, Retries: 4, Sideband: "open"}},
		"heartbeat answer":   {"HeartbeatAnswer", session.HeartbeatAnswer{Action: session.ActionEnd, Reason: session.ReasonMaxDuration}},
		"continue":           {"HeartbeatAnswer", session.HeartbeatAnswer{Action: session.ActionContinue}},
		"transcript batch":   {"TranscriptBatch", session.TranscriptBatch{Segments: []session.Segment{{Seq: 1, Speaker: "candidate", Text: "a"}}}},
		"transcript ack":     {"TranscriptAck", session.TranscriptAck{AckedSeq: 7}},
		"ended":              {"Ended", session.Ended{Reason: session.ReasonCompleted, LastSeq: 0}},
		"error":              {"ErrorResponse", map[string]any{"error": map[string]string{"code": session.EQUOTA, "message": "m"}}},
		"start answer":       {"StartReady", map[string]any{"interview": full, "connect": map[string]any{"sdp_url": "u", "token_url": "u", "access_token": "t", "expires_at": now}}},
		"start answer, 202":  {"StartPending", map[string]any{"interview": scheduled}},
		"list":               {"InterviewList", map[string]any{"items": []session.Interview{full}, "next_cursor": nil}},
		"list, next page":    {"PositionList", map[string]any{"items": []session.PositionRecord{position}, "next_cursor": "abc"}},
		"api key":            {"APIKey", apiKey},
		"api key, used":      {"APIKey", used},
		"api keys":           {"APIKeyList", map[string]any{"items": []session.APIKey{apiKey, used}, "next_cursor": nil}},
		"webhook endpoint":   {"WebhookEndpoint", endpoint},
		"webhook endpoints":  {"WebhookEndpointList", map[string]any{"items": []session.WebhookEndpoint{endpoint}, "next_cursor": nil}},
		"webhook created":    {"WebhookEndpointCreated", map[string]any{"id": id, "url": "https://example.com/h", "events": []string{"insights.ready"}, "description": "", "disabled": false, "created_at": now, "secret": "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw3kOgYWybsmU="}},
		"webhook deliveries": {"WebhookDeliveryList", map[string]any{"items": []session.WebhookDelivery{delivery, {ID: id, EndpointID: id, MessageID: "msg_y", EventType: "insights.failed", Status: "succeeded", CreatedAt: now}}, "next_cursor": nil}},
		"error, idempotency": {"ErrorResponse", map[string]any{"error": map[string]string{"code": session.EIDEMPOTENCYREUSED, "message": "m"}}},
	}
	opts := []openapi3.SchemaValidationOption{
		openapi3.MultiErrors(),
		openapi3.WithStringFormatValidator("uuid", openapi3.NewCallbackValidator(checkUUID)),
		openapi3.WithStringFormatValidator("email", openapi3.NewCallbackValidator(checkEmail)),
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			b, err := json.Marshal(tc.value)
			if err != nil {
				t.Fatal(err)
			}
			var v any
			if err := json.Unmarshal(b, &v); err != nil {
				t.Fatal(err)
			}
			ref := doc.Components.Schemas[tc.schema]
			if ref == nil {
				t.Fatalf("no schema %s", tc.schema)
			}
			if err := ref.Value.VisitJSON(v, opts...); err != nil {
				t.Errorf("%s does not match schema %s: %v", b, tc.schema, err)
			}
		})
	}
	// Every state, end reason and actor of pkg/session is in the contract.
	enum := func(schema string) []any { return doc.Components.Schemas[schema].Value.Enum }
	for _, s := range session.States {
		if !slices.Contains(enum("InterviewStatus"), any(string(s))) {
			t.Errorf("state %s is not in InterviewStatus", s)
		}
	}
	for _, r := range session.EndReasons {
		if !slices.Contains(enum("EndReason"), any(string(r))) {
			t.Errorf("end reason %s is not in EndReason", r)
		}
	}
	for _, a := range []string{session.ActorUser, session.ActorController, session.ActorVM, session.ActorReconciler} {
		if !slices.Contains(enum("Actor"), any(a)) {
			t.Errorf("actor %s is not in Actor", a)
		}
	}
	if len(enum("InterviewStatus")) != len(session.States) || len(enum("EndReason")) != len(session.EndReasons) {
		t.Error("the contract has states or end reasons pkg/session does not know")
	}
}
