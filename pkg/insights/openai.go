package insights

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/openai/openai-go/v3/option"
	"github.com/openai/openai-go/v3/packages/param"
	"github.com/openai/openai-go/v3/responses"
)

// Defaults of OpenAIConfig.
const (
	DefaultBaseURL = "https://api.openai.com/v1"
	// DefaultModel is a current general GPT model with Structured Outputs.
	DefaultModel = "gpt-5.5"
	// DefaultMaxInputTokens bounds the estimated prompt size (instructions,
	// position, competencies and transcript); well inside current GPT
	// models' context, and a bound on an interview's cost.
	DefaultMaxInputTokens = 100_000
	// DefaultMaxOutputTokens bounds the answer, reasoning tokens
	// included.
	DefaultMaxOutputTokens = 16_000
	// DefaultRequestTimeout bounds one request to the API.
	DefaultRequestTimeout = 5 * time.Minute
)

// SchemaName is the name of the response format sent to the API.
const SchemaName = "interview_assessment"

// OpenAIConfig configures the OpenAI scorer.
type OpenAIConfig struct {
	// APIKey is the API key. Required; it is never logged or put in an
	// error.
	APIKey string
	// BaseURL is the API base, version path included. Default
	// DefaultBaseURL.
	BaseURL string
	// Model is the model to ask. Default DefaultModel.
	Model string
	// MaxInputTokens bounds the estimated prompt; longer transcripts are
	// trimmed (see EstimateTokens and the package's trimming rule).
	// Default DefaultMaxInputTokens.
	MaxInputTokens int
	// MaxOutputTokens is the answer's token budget. An answer cut short
	// by it is asked once more with twice the budget. Default
	// DefaultMaxOutputTokens.
	MaxOutputTokens int64
	// RequestTimeout bounds each request. Default DefaultRequestTimeout.
	RequestTimeout time.Duration
	// HTTPClient sends the requests. Default: a client of its own.
	HTTPClient *http.Client
	// Logger gets one debug line per request. Default: discarded.
	Logger *slog.Logger
}

// OpenAI scores with OpenAI's Responses API and Structured Outputs. The
// SDK's own retries are off: a failure is classified and returned, and
// the job that runs the analysis retries it.
type OpenAI struct {
	cfg OpenAIConfig
	svc responses.ResponseService
	log *slog.Logger
}

// NewOpenAI returns the OpenAI scorer.
func NewOpenAI(cfg OpenAIConfig) (*OpenAI, error) {
	if cfg.APIKey == "" {
		return nil, errors.New("insights: openai scorer: the API key is empty")
	}
	if cfg.BaseURL == "" {
		cfg.BaseURL = DefaultBaseURL
	}
	if cfg.Model == "" {
		cfg.Model = DefaultModel
	}
	if cfg.MaxInputTokens <= 0 {
		cfg.MaxInputTokens = DefaultMaxInputTokens
	}
	if cfg.MaxOutputTokens <= 0 {
		cfg.MaxOutputTokens = DefaultMaxOutputTokens
	}
	if cfg.RequestTimeout <= 0 {
		cfg.RequestTimeout = DefaultRequestTimeout
	}
	if cfg.HTTPClient == nil {
		cfg.HTTPClient = &http.Client{}
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	svc := responses.NewResponseService(
		option.WithBaseURL(cfg.BaseURL),
		option.WithAPIKey(cfg.APIKey),
		option.WithHTTPClient(cfg.HTTPClient),
		option.WithMaxRetries(0),
	)
	return &OpenAI{cfg: cfg, svc: svc, log: log}, nil
}

// Model returns the model the scorer asks.
func (o *OpenAI) Model() string { return o.cfg.Model }

// Score asks the model for an assessment of in. An answer cut short by
// the output budget (status incomplete, reason max_output_tokens) is asked
// once more with twice the budget; any other incomplete answer, or a
// second one, is a permanent ReasonIncomplete error. A refusal is a
// permanent ReasonRefusal error. Token usage of every attempt is added up,
// in the Assessment or in the *Error.
func (o *OpenAI) Score(ctx context.Context, in Input) (Assessment, error) {
	p := BuildPrompt(in, o.cfg.MaxInputTokens)
	if len(in.Segments) > 0 && p.OmittedSegments == len(in.Segments) {
		return Assessment{}, permanent(ReasonBadRequest, fmt.Sprintf(
			"no transcript segment fits the input budget of %d tokens next to the position and competencies", o.cfg.MaxInputTokens))
	}
	params := responses.ResponseNewParams{
		Model:           o.cfg.Model,
		Instructions:    param.NewOpt(p.Instructions),
		Input:           responses.ResponseNewParamsInputUnion{OfString: param.NewOpt(p.Input)},
		MaxOutputTokens: param.NewOpt(o.cfg.MaxOutputTokens),
		// The transcript is personal data: do not keep it at the API.
		Store: param.NewOpt(false),
		Text: responses.ResponseTextConfigParam{
			Format: responses.ResponseFormatTextConfigUnionParam{
				OfJSONSchema: &responses.ResponseFormatTextJSONSchemaConfigParam{
					Name:        SchemaName,
					Schema:      Schema(in),
					Strict:      param.NewOpt(true),
					Description: param.NewOpt("Assessment of one interview against the position's competencies."),
				},
			},
		},
	}
	var usage Usage
	for attempt := 1; ; attempt++ {
		resp, err := o.create(ctx, params)
		if err != nil {
			e := o.classifyAPI(ctx, err)
			e.Usage = usage
			return Assessment{}, e
		}
		usage.InputTokens += resp.Usage.InputTokens
		usage.OutputTokens += resp.Usage.OutputTokens
		a, err := o.parse(resp)
		if err != nil {
			var e *Error
			if errors.As(err, &e) && e.Reason == ReasonIncomplete && resp.IncompleteDetails.Reason == "max_output_tokens" && attempt == 1 {
				params.MaxOutputTokens = param.NewOpt(2 * o.cfg.MaxOutputTokens)
				o.log.Debug("insights: answer cut short by max_output_tokens; asking again with twice the budget",
					"model", o.cfg.Model, "max_output_tokens", 2*o.cfg.MaxOutputTokens)
				continue
			}
			if errors.As(err, &e) {
				e.Usage = usage
			}
			return Assessment{}, err
		}
		a.Usage = usage
		a.OmittedSegments = p.OmittedSegments
		return a, nil
	}
}

func (o *OpenAI) create(ctx context.Context, params responses.ResponseNewParams) (*responses.Response, error) {
	ctx, cancel := context.WithTimeout(ctx, o.cfg.RequestTimeout)
	defer cancel()
	start := time.Now()
	resp, err := o.svc.New(ctx, params)
	if err != nil {
		o.log.Debug("insights: responses request failed", "model", o.cfg.Model,
			"duration", time.Since(start), "error", redact(err.Error(), o.cfg.APIKey))
		return nil, err
	}
	o.log.Debug("insights: responses request done", "model", o.cfg.Model, "id", resp.ID,
		"status", string(resp.Status), "input_tokens", resp.Usage.InputTokens,
		"output_tokens", resp.Usage.OutputTokens, "duration", time.Since(start))
	return resp, nil
}

// answer is the JSON the schema asks for.
type answer struct {
	Competencies   map[string]answerCompetency `json:"competencies"`
	Summary        string                      `json:"summary"`
	Strengths      []string                    `json:"strengths"`
	Concerns       []string                    `json:"concerns"`
	Recommendation Recommendation              `json:"recommendation"`
}

type answerCompetency struct {
	Evidence  []Evidence `json:"evidence"`
	Rationale string     `json:"rationale"`
	Score     int        `json:"score"`
}

// parse reads a response: its status, refusal or JSON answer.
func (o *OpenAI) parse(resp *responses.Response) (Assessment, error) {
	switch resp.Status {
	case responses.ResponseStatusCompleted, "":
	case responses.ResponseStatusIncomplete:
		reason := resp.IncompleteDetails.Reason
		if reason == "" {
			reason = "unspecified"
		}
		return Assessment{}, permanent(ReasonIncomplete, "the model's answer is incomplete (reason: "+reason+")")
	case responses.ResponseStatusFailed:
		e := &Error{Reason: ReasonServerError, Retryable: true,
			Message: fmt.Sprintf("the response failed: %s: %s", resp.Error.Code, redact(resp.Error.Message, o.cfg.APIKey))}
		if resp.Error.Code != "server_error" && resp.Error.Code != "rate_limit_exceeded" {
			e.Reason, e.Retryable = ReasonBadRequest, false
		}
		return Assessment{}, e
	default:
		return Assessment{}, &Error{Reason: ReasonServerError, Retryable: true,
			Message: fmt.Sprintf("the response has status %q", resp.Status)}
	}
	var text strings.Builder
	for _, item := range resp.Output {
		if item.Type != "message" {
			continue
		}
		for _, c := range item.Content {
			switch c.Type {
			case "refusal":
				return Assessment{}, permanent(ReasonRefusal, "the model refused to assess the interview: "+clip(c.Refusal, 300))
			case "output_text":
				text.WriteString(c.Text)
			}
		}
	}
	if text.Len() == 0 {
		return Assessment{}, permanent(ReasonSchemaViolation, "the response has no output text")
	}
	var ans answer
	dec := json.NewDecoder(strings.NewReader(text.String()))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&ans); err != nil {
		return Assessment{}, &Error{Reason: ReasonSchemaViolation, Message: "the answer does not match the schema: " + err.Error()}
	}
	a := Assessment{
		Summary:        ans.Summary,
		Strengths:      ans.Strengths,
		Concerns:       ans.Concerns,
		Recommendation: ans.Recommendation,
		Model:          resp.Model,
	}
	if a.Model == "" {
		a.Model = o.cfg.Model
	}
	for name, c := range ans.Competencies {
		a.Competencies = append(a.Competencies, CompetencyAssessment{
			Name: name, Score: c.Score, Rationale: c.Rationale, Evidence: c.Evidence,
		})
	}
	return a, nil
}

// classifyAPI maps an SDK error to an *Error without keeping the SDK
// error (it holds the request, Authorization header included).
func (o *OpenAI) classifyAPI(ctx context.Context, err error) *Error {
	var apiErr *responses.Error
	if errors.As(err, &apiErr) {
		e := &Error{StatusCode: apiErr.StatusCode}
		msg := redact(apiErr.Message, o.cfg.APIKey)
		if apiErr.Code != "" {
			msg = apiErr.Code + ": " + msg
		}
		e.Message = "the API answered " + strconv.Itoa(apiErr.StatusCode) + ": " + msg
		switch code := apiErr.StatusCode; {
		case code == http.StatusTooManyRequests && apiErr.Code == "insufficient_quota":
			e.Reason = ReasonAuth // the account must act; retrying will not help
		case code == http.StatusTooManyRequests:
			e.Reason, e.Retryable = ReasonRateLimited, true
			if apiErr.Response != nil {
				e.RetryAfter = retryAfter(apiErr.Response.Header, time.Now())
			}
		case code == http.StatusRequestTimeout:
			e.Reason, e.Retryable = ReasonTimeout, true
		case code == http.StatusConflict || code >= 500:
			e.Reason, e.Retryable = ReasonServerError, true
		case code == http.StatusUnauthorized || code == http.StatusForbidden:
			e.Reason = ReasonAuth
			e.Message = "the API answered " + strconv.Itoa(code) + ": the API key was not accepted"
		default:
			e.Reason = ReasonBadRequest
		}
		return e
	}
	var netErr net.Error
	switch {
	case errors.Is(err, context.DeadlineExceeded):
		return &Error{Reason: ReasonTimeout, Retryable: true, Message: "the request to the API timed out", err: context.DeadlineExceeded}
	case errors.Is(err, context.Canceled) || ctx.Err() != nil:
		return &Error{Reason: ReasonTimeout, Retryable: true, Message: "the request to the API was cancelled", err: context.Canceled}
	case errors.As(err, &netErr) && netErr.Timeout():
		return &Error{Reason: ReasonTimeout, Retryable: true, Message: "the request to the API timed out: " + redact(err.Error(), o.cfg.APIKey)}
	}
	return &Error{Reason: ReasonNetwork, Retryable: true, Message: "the request to the API failed: " + redact(err.Error(), o.cfg.APIKey)}
}

// retryAfter reads Retry-After-Ms, or Retry-After in seconds or as an
// HTTP date; 0 when neither says anything usable.
func retryAfter(h http.Header, now time.Time) time.Duration {
	if v := h.Get("Retry-After-Ms"); v != "" {
		if ms, err := strconv.ParseFloat(v, 64); err == nil && ms > 0 {
			return time.Duration(ms * float64(time.Millisecond))
		}
	}
	v := strings.TrimSpace(h.Get("Retry-After"))
	if v == "" {
		return 0
	}
	if s, err := strconv.ParseFloat(v, 64); err == nil {
		if s > 0 {
			return time.Duration(s * float64(time.Second))
		}
		return 0
	}
	if t, err := http.ParseTime(v); err == nil && t.After(now) {
		return t.Sub(now)
	}
	return 0
}

// redact removes the API key, and anything shaped like an OpenAI secret
// key (the API echoes a masked key in 401 messages), from s.
func redact(s, key string) string {
	if key != "" {
		s = strings.ReplaceAll(s, key, "[redacted]")
	}
	for i := strings.Index(s, "sk-"); i >= 0; i = strings.Index(s, "sk-") {
		j := i + len("sk-")
		for j < len(s) && isKeyByte(s[j]) {
			j++
		}
		s = s[:i] + "[redacted]" + s[j:]
	}
	return s
}

func isKeyByte(b byte) bool {
	return b >= 'a' && b <= 'z' || b >= 'A' && b <= 'Z' || b >= '0' && b <= '9' || b == '-' || b == '_' || b == '*' || b == '.'
}

func clip(s string, n int) string {
	if len(s) <= n {
		return s
	}
	cut := 0
	for i := range s {
		if i > n {
			break
		}
		cut = i
	}
	return s[:cut] + "…"
}
