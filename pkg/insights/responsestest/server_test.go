package responsestest_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"testing"

	"github.com/openai/openai-go/v3/option"
	"github.com/openai/openai-go/v3/packages/param"
	"github.com/openai/openai-go/v3/responses"

	"github.com/interviewvm/controlplane/pkg/insights"
	"github.com/interviewvm/controlplane/pkg/insights/responsestest"
)

const key = "sk-fake-test-key-1234567890"

func newFake(t *testing.T) (*responsestest.Server, responses.ResponseService) {
	t.Helper()
	s := responsestest.NewServer(responsestest.Config{APIKey: key})
	t.Cleanup(s.Close)
	svc := responses.NewResponseService(option.WithBaseURL(s.BaseURL()), option.WithAPIKey(key), option.WithMaxRetries(0))
	return s, svc
}

func params(schema map[string]any, strict bool) responses.ResponseNewParams {
	return responses.ResponseNewParams{
		Model: "gpt-5.5",
		Input: responses.ResponseNewParamsInputUnion{OfString: param.NewOpt("hello")},
		Text: responses.ResponseTextConfigParam{Format: responses.ResponseFormatTextConfigUnionParam{
			OfJSONSchema: &responses.ResponseFormatTextJSONSchemaConfigParam{Name: "answer", Schema: schema, Strict: param.NewOpt(strict)},
		}},
	}
}

func obj(props map[string]any, required ...string) map[string]any {
	req := make([]any, len(required))
	for i, r := range required {
		req[i] = r
	}
	return map[string]any{"type": "object", "additionalProperties": false, "properties": props, "required": req}
}

func str() map[string]any { return map[string]any{"type": "string"} }

// nested returns objects nested n deep.
func nested(n int) map[string]any {
	s := obj(map[string]any{"leaf": str()}, "leaf")
	for range n - 1 {
		s = obj(map[string]any{"child": s}, "child")
	}
	return s
}

func TestStrictSchemaValidation(t *testing.T) {
	many := map[string]any{}
	var names []string
	for i := range responsestest.MaxObjectProperties + 1 {
		n := fmt.Sprintf("p%d", i)
		many[n] = str()
		names = append(names, n)
	}
	bigEnum := make([]any, responsestest.MaxEnumValues+1)
	for i := range bigEnum {
		bigEnum[i] = fmt.Sprint(i)
	}
	noAP := obj(map[string]any{"a": str()}, "a")
	delete(noAP, "additionalProperties")
	innerNoAP := obj(map[string]any{"inner": map[string]any{"type": "object", "properties": map[string]any{"x": str()}, "required": []any{"x"}}}, "inner")

	for _, tc := range []struct {
		name   string
		schema map[string]any
		want   string // "" means accepted
	}{
		{"valid", obj(map[string]any{"a": str(), "n": map[string]any{"type": []any{"integer", "null"}, "minimum": 1}}, "a", "n"), ""},
		{"valid at the nesting limit", nested(responsestest.MaxNesting), ""},
		{"no additionalProperties", noAP, "In context=(), 'additionalProperties' is required to be supplied and to be false."},
		{"nested object without additionalProperties", innerNoAP, "In context=('properties', 'inner'), 'additionalProperties' is required to be supplied and to be false."},
		{"property not required", obj(map[string]any{"a": str(), "b": str()}, "a"), "'required' is required to be supplied and to be an array including every key in properties. Missing 'b'."},
		{"extra required key", obj(map[string]any{"a": str()}, "a", "z"), "Extra required key 'z' supplied."},
		{"minLength", obj(map[string]any{"a": map[string]any{"type": "string", "minLength": 2}}, "a"), "In context=('properties', 'a'), 'minLength' is not permitted."},
		{"allOf", obj(map[string]any{"a": map[string]any{"allOf": []any{str()}}}, "a"), "'allOf' is not permitted."},
		{"format uri", obj(map[string]any{"a": map[string]any{"type": "string", "format": "uri"}}, "a"), "format 'uri' is not permitted."},
		{"root array", map[string]any{"type": "array", "items": str()}, `schema must be a JSON Schema of 'type: "object"'`},
		{"too deep", nested(responsestest.MaxNesting + 1), "11 levels of nesting exceeds limit of 10."},
		{"too many properties", obj(many, names...), "5001 object properties exceeds limit of 5000."},
		{"too many enum values", obj(map[string]any{"e": map[string]any{"type": "string", "enum": bigEnum}}, "e"), "1001 enum values exceeds limit of 1000."},
		{"unresolved $ref", obj(map[string]any{"a": map[string]any{"$ref": "#/$defs/missing"}}, "a"), "reference '#/$defs/missing' can't be resolved."},
	} {
		t.Run(tc.name, func(t *testing.T) {
			fake, svc := newFake(t)
			resp, err := svc.New(context.Background(), params(tc.schema, true))
			if tc.want == "" {
				if err != nil {
					t.Fatalf("valid schema refused: %v", err)
				}
				if resp.Status != responses.ResponseStatusCompleted || resp.OutputText() == "" {
					t.Errorf("response %s", resp.RawJSON())
				}
				return
			}
			var apiErr *responses.Error
			if !errors.As(err, &apiErr) {
				t.Fatalf("got %v, want a 400", err)
			}
			if apiErr.StatusCode != http.StatusBadRequest || apiErr.Type != "invalid_request_error" ||
				apiErr.Param != "text.format.schema" || apiErr.Code != "invalid_json_schema" ||
				!strings.HasPrefix(apiErr.Message, "Invalid schema for response_format 'answer': ") ||
				!strings.Contains(apiErr.Message, tc.want) {
				t.Errorf("got %d %s/%s/%s %q, want message with %q", apiErr.StatusCode, apiErr.Type, apiErr.Param, apiErr.Code, apiErr.Message, tc.want)
			}
			if got := fake.Requests()[0].Status; got != http.StatusBadRequest {
				t.Errorf("recorded status %d", got)
			}
		})
	}
	t.Run("not strict: not checked", func(t *testing.T) {
		_, svc := newFake(t)
		if _, err := svc.New(context.Background(), params(noAP, false)); err != nil {
			t.Errorf("non-strict schema refused: %v", err)
		}
	})
}

func TestOurSchemaIsStrictValid(t *testing.T) {
	// Many competencies with names a JSON Schema must carry as property
	// names: spaces, quotes, punctuation, non-ASCII.
	in := insights.Input{PositionTitle: "x"}
	for i := range 150 {
		in.Competencies = append(in.Competencies, insights.Competency{Name: fmt.Sprintf("Skill %d: \"Ünïcode\" & co.", i), Weight: 1})
	}
	in.Segments = []insights.Segment{{Seq: 3, Speaker: insights.SpeakerCandidate, Text: "hi"}, {Seq: 9, Speaker: insights.SpeakerCandidate, Text: "bye"}}
	_, svc := newFake(t)
	resp, err := svc.New(context.Background(), params(insights.Schema(in), true))
	if err != nil {
		t.Fatalf("our schema is refused: %v", err)
	}
	var ans map[string]any
	if err := json.Unmarshal([]byte(resp.OutputText()), &ans); err != nil {
		t.Fatal(err)
	}
	if n := len(ans["competencies"].(map[string]any)); n != 150 {
		t.Errorf("answer has %d competencies", n)
	}
}

func TestAuthAndParameters(t *testing.T) {
	fake, _ := newFake(t)
	for _, tc := range []struct {
		name   string
		opts   []option.RequestOption
		status int
		code   string
		msg    string
	}{
		{"wrong key", []option.RequestOption{option.WithAPIKey("sk-wrong-key-abcdefghij")}, 401, "invalid_api_key", "Incorrect API key provided: sk-****************ghij."},
		{"no key", []option.RequestOption{option.WithHeaderDel("Authorization"), option.WithAPIKey("")}, 401, "", "You didn't provide an API key."},
		{"unknown parameter", []option.RequestOption{option.WithAPIKey(key), option.WithJSONSet("temprature", 1)}, 400, "unknown_parameter", "Unknown parameter: 'temprature'."},
		{"tiny output budget", []option.RequestOption{option.WithAPIKey(key), option.WithJSONSet("max_output_tokens", 5)}, 400, "integer_below_min_value", "Expected a value >= 16"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			svc := responses.NewResponseService(append([]option.RequestOption{option.WithBaseURL(fake.BaseURL()), option.WithMaxRetries(0)}, tc.opts...)...)
			_, err := svc.New(context.Background(), params(obj(map[string]any{"a": str()}, "a"), true))
			var apiErr *responses.Error
			if !errors.As(err, &apiErr) || apiErr.StatusCode != tc.status || apiErr.Code != tc.code || !strings.Contains(apiErr.Message, tc.msg) {
				t.Errorf("got %v (%+v), want %d %q %q", err, apiErr, tc.status, tc.code, tc.msg)
			}
		})
	}
}

func TestResponseShape(t *testing.T) {
	fake, _ := newFake(t)
	fake.Script(
		responsestest.Behavior{Text: `{"a":"x"}`},
		responsestest.Behavior{Refusal: "I can't."},
		responsestest.Behavior{Incomplete: "max_output_tokens", Text: `{"a":"xxxxxxxx"}`},
	)
	body, _ := json.Marshal(map[string]any{"model": "gpt-5.5", "input": "hi", "store": false,
		"text": map[string]any{"format": map[string]any{"type": "json_schema", "name": "answer", "strict": true, "schema": obj(map[string]any{"a": str()}, "a")}}})
	post := func() map[string]any {
		req, _ := http.NewRequest(http.MethodPost, fake.BaseURL()+"/responses", bytes.NewReader(body))
		req.Header.Set("Authorization", "Bearer "+key)
		req.Header.Set("Content-Type", "application/json")
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer res.Body.Close()
		if res.StatusCode != http.StatusOK {
			t.Fatalf("status %d", res.StatusCode)
		}
		var out map[string]any
		if err := json.NewDecoder(res.Body).Decode(&out); err != nil {
			t.Fatal(err)
		}
		return out
	}
	message := func(r map[string]any) map[string]any {
		out := r["output"].([]any)
		m := out[len(out)-1].(map[string]any)
		if m["type"] != "message" || m["role"] != "assistant" {
			t.Fatalf("last output item %v", m)
		}
		return m["content"].([]any)[0].(map[string]any)
	}

	ok := post()
	if id, _ := ok["id"].(string); !strings.HasPrefix(id, "resp_") || ok["object"] != "response" || ok["status"] != "completed" || ok["incomplete_details"] != nil || ok["store"] != false {
		t.Errorf("response %v", ok)
	}
	if c := message(ok); c["type"] != "output_text" || c["text"] != `{"a":"x"}` {
		t.Errorf("content %v", c)
	}
	u := ok["usage"].(map[string]any)
	if u["input_tokens"].(float64) <= 0 || u["output_tokens"].(float64) <= 0 || u["total_tokens"].(float64) != u["input_tokens"].(float64)+u["output_tokens"].(float64) {
		t.Errorf("usage %v", u)
	}

	if c := message(post()); c["type"] != "refusal" || c["refusal"] != "I can't." {
		t.Errorf("refusal content %v", c)
	}

	inc := post()
	if inc["status"] != "incomplete" || inc["incomplete_details"].(map[string]any)["reason"] != "max_output_tokens" {
		t.Errorf("incomplete response %v", inc)
	}
	if txt := message(inc)["text"].(string); json.Valid([]byte(txt)) {
		t.Errorf("an incomplete answer's text %q should be cut off", txt)
	}
}
