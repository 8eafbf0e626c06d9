package apigen

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"regexp"
	"strconv"
	"strings"
	"sync"

	"github.com/getkin/kin-openapi/openapi3"
	"github.com/getkin/kin-openapi/openapi3filter"
	"github.com/getkin/kin-openapi/routers"
	"github.com/getkin/kin-openapi/routers/legacy"
	"github.com/labstack/echo/v4"
	"github.com/labstack/echo/v4/middleware"

	"github.com/interviewvm/controlplane/pkg/session"
)

// DefaultMaxBodyBytes caps request bodies unless ValidatorOptions or the
// operation (x-max-body-bytes on its request body) says otherwise.
const DefaultMaxBodyBytes = 1 << 20

// maxBodyExtension, on a request body of the spec, is that operation's cap
// on the body's size in bytes.
const maxBodyExtension = "x-max-body-bytes"

// ValidatorOptions configures Validator. The zero value is ready to use.
type ValidatorOptions struct {
	// MaxBodyBytes caps the request body of every operation whose request
	// body sets no x-max-body-bytes (the SDP offer sets 64 KiB); 0 means
	// DefaultMaxBodyBytes.
	MaxBodyBytes int64
	// Skipper exempts the requests it returns true for.
	Skipper middleware.Skipper
}

// Validator returns an echo middleware validating every request of an
// operation of the contract against it, with kin-openapi's openapi3filter:
// path, query and header parameters, Content-Type and the request body.
// A violation is returned as a *session.Error with code
// session.EINVALID (400) and a message naming the parameter or body field
// and the rule, e.g. `request body: competencies[0].weight: number must be
// more than 0`; a body larger than allowed as session.ETOOLARGE (413). The
// request body stays readable for the handler.
//
// Requests of no operation of the contract (GET /metrics, unknown paths or
// methods) pass through untouched for echo to route or refuse. Credentials
// are not checked: an operation's security only requires that the handlers
// authenticate, which controlapi does, so a request without an
// Authorization header passes and gets controlapi's 401.
//
// A JSON operation's body sent without Content-Type is taken as JSON (the
// header is set on the request), as controlapi's decoder does. Parameter and
// body defaults of the spec are not filled in: handlers apply them.
//
// Mount it with e.Use (or e.Pre): it finds the operation from the request
// itself, with kin-openapi's router, not from echo's routing. Mount it
// after authentication-independent middleware such as BodyLimit (whose 413
// it also reports as too_large) and before the handlers. Validator panics
// only if the generated code is corrupt, which the package's tests catch.
func Validator(opts ValidatorOptions) echo.MiddlewareFunc {
	v, err := newValidator(opts)
	if err != nil {
		panic("apigen: " + err.Error())
	}
	return v.middleware
}

// uuidText is the textual form of RFC 4122 UUIDs, of any version and
// variant (v4 and v7 alike, the nil UUID): 8-4-4-4-12 hex digits of either
// case. The braced, urn: and undashed forms uuid.Parse also takes are not
// in the contract.
var uuidText = regexp.MustCompile(`^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$`)

func checkUUID(s string) error {
	if !uuidText.MatchString(s) {
		return errors.New("not a UUID")
	}
	return nil
}

// checkEmail is controlapi's rule: after trimming, an @ with something on
// both sides of the last one and no whitespace.
func checkEmail(s string) error {
	s = strings.TrimSpace(s)
	at := strings.LastIndex(s, "@")
	if at < 1 || at == len(s)-1 || strings.ContainsAny(s, " \t\r\n") {
		return errors.New("not an email address")
	}
	return nil
}

// passCredentials is the validator's AuthenticationFunc: it lets every
// request through, with or without an Authorization header. controlapi
// verifies tokens and answers 401 or 403 with the contract's error JSON.
func passCredentials(context.Context, *openapi3filter.AuthenticationInput) error { return nil }

var registerSDPDecoder sync.Once

type validator struct {
	router  routers.Router
	options openapi3filter.Options
	skipper middleware.Skipper
	maxBody int64
	// limits holds the body caps of the operations that set their own.
	limits map[*openapi3.Operation]int64
}

func newValidator(opts ValidatorOptions) (*validator, error) {
	doc, err := GetSpec()
	if err != nil {
		return nil, fmt.Errorf("load the embedded OpenAPI document: %w", err)
	}
	// Match paths as they are, whatever host the server is reached by.
	doc.Servers = nil
	router, err := legacy.NewRouter(doc)
	if err != nil {
		return nil, fmt.Errorf("route the embedded OpenAPI document: %w", err)
	}
	registerSDPDecoder.Do(func() {
		if openapi3filter.RegisteredBodyDecoder("application/sdp") == nil {
			openapi3filter.RegisterBodyDecoder("application/sdp", openapi3filter.PlainBodyDecoder)
		}
	})
	v := &validator{
		router:  router,
		skipper: opts.Skipper,
		maxBody: opts.MaxBodyBytes,
		limits:  map[*openapi3.Operation]int64{},
		options: openapi3filter.Options{
			AuthenticationFunc:  passCredentials,
			SkipSettingDefaults: true,
			SchemaValidationOptions: []openapi3.SchemaValidationOption{
				openapi3.WithStringFormatValidator("uuid", openapi3.NewCallbackValidator(checkUUID)),
				openapi3.WithStringFormatValidator("email", openapi3.NewCallbackValidator(checkEmail)),
			},
		},
	}
	if v.maxBody <= 0 {
		v.maxBody = DefaultMaxBodyBytes
	}
	for path, item := range doc.Paths.Map() {
		for method, op := range item.Operations() {
			if op.RequestBody == nil || op.RequestBody.Value == nil {
				continue
			}
			raw, ok := op.RequestBody.Value.Extensions[maxBodyExtension]
			if !ok {
				continue
			}
			n, err := strconv.ParseInt(fmt.Sprint(raw), 10, 64)
			if err != nil || n <= 0 {
				return nil, fmt.Errorf("%s %s: %s must be a positive integer, not %v", method, path, maxBodyExtension, raw)
			}
			v.limits[op] = n
		}
	}
	return v, nil
}

func (v *validator) middleware(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) error {
		if v.skipper != nil && v.skipper(c) {
			return next(c)
		}
		req := c.Request()
		route, params, err := v.router.FindRoute(req)
		if err != nil {
			// Not an operation of the contract: echo routes or refuses it.
			return next(c)
		}
		limit := v.maxBody
		if n, ok := v.limits[route.Operation]; ok {
			limit = n
		}
		if req.ContentLength > limit {
			return tooLarge(limit)
		}
		if req.Body != nil && req.Body != http.NoBody {
			req.Body = http.MaxBytesReader(c.Response(), req.Body, limit)
		}
		defaultContentType(req, route.Operation)
		input := &openapi3filter.RequestValidationInput{
			Request: req, PathParams: params, Route: route, Options: &v.options,
		}
		if err := openapi3filter.ValidateRequest(req.Context(), input); err != nil {
			return invalid(err, route.Operation)
		}
		return next(c)
	}
}

// defaultContentType sets Content-Type on a body sent without one when the
// operation takes a single media type.
func defaultContentType(req *http.Request, op *openapi3.Operation) {
	if req.ContentLength == 0 || req.Header.Get(echo.HeaderContentType) != "" ||
		op.RequestBody == nil || op.RequestBody.Value == nil || len(op.RequestBody.Value.Content) != 1 {
		return
	}
	for mt := range op.RequestBody.Value.Content {
		req.Header.Set(echo.HeaderContentType, mt)
	}
}

func tooLarge(limit int64) error {
	return session.Errorf(session.ETOOLARGE, "request body is larger than %s", byteSize(limit))
}

func byteSize(n int64) string {
	switch {
	case n >= 1<<20 && n%(1<<20) == 0:
		return fmt.Sprintf("%d MiB", n>>20)
	case n >= 1<<10 && n%(1<<10) == 0:
		return fmt.Sprintf("%d KiB", n>>10)
	}
	return fmt.Sprintf("%d bytes", n)
}

// invalid turns a kin-openapi validation error into the contract's error.
func invalid(err error, op *openapi3.Operation) error {
	var maxBytes *http.MaxBytesError
	if errors.As(err, &maxBytes) {
		return tooLarge(maxBytes.Limit)
	}
	if errors.Is(err, echo.ErrStatusRequestEntityTooLarge) {
		return session.Errorf(session.ETOOLARGE, "request body too large")
	}
	var re *openapi3filter.RequestError
	if !errors.As(err, &re) {
		return session.Errorf(session.EINVALID, "%s", err.Error())
	}
	switch {
	case re.Parameter != nil:
		return session.Errorf(session.EINVALID, "%s parameter %q: %s", re.Parameter.In, re.Parameter.Name,
			parameterReason(re))
	case strings.HasPrefix(re.Reason, "header Content-Type has unexpected value"):
		return session.Errorf(session.EINVALID, "Content-Type must be %s", mediaTypes(op))
	case errors.Is(re.Err, openapi3filter.ErrInvalidRequired):
		return session.Errorf(session.EINVALID, "request body is required")
	case re.Reason == "reading failed":
		return session.Errorf(session.EINVALID, "request body could not be read")
	case re.Reason == "failed to decode request body":
		return session.Errorf(session.EINVALID, "request body is not valid %s", mediaTypes(op))
	}
	var se *openapi3.SchemaError
	if errors.As(re.Err, &se) {
		return session.Errorf(session.EINVALID, "request body: %s", schemaReason(se))
	}
	return session.Errorf(session.EINVALID, "%s", re.Error())
}

func mediaTypes(op *openapi3.Operation) string {
	if op.RequestBody == nil || op.RequestBody.Value == nil {
		return "absent"
	}
	types := make([]string, 0, len(op.RequestBody.Value.Content))
	for mt := range op.RequestBody.Value.Content {
		if mt == "application/json" {
			mt = "JSON (application/json)"
		}
		types = append(types, mt)
	}
	return strings.Join(types, " or ")
}

func parameterReason(re *openapi3filter.RequestError) string {
	var se *openapi3.SchemaError
	var pe *openapi3filter.ParseError
	switch {
	case errors.Is(re.Err, openapi3filter.ErrInvalidRequired):
		return "is required"
	case errors.Is(re.Err, openapi3filter.ErrInvalidEmptyValue):
		return "must not be empty"
	case errors.As(re.Err, &se):
		return schemaReason(se)
	case errors.As(re.Err, &pe):
		if s := re.Parameter.Schema; s != nil && s.Value != nil && s.Value.Type != nil {
			switch {
			case s.Value.Type.Is("integer"):
				return "must be an integer"
			case s.Value.Type.Is("number"):
				return "must be a number"
			case s.Value.Type.Is("boolean"):
				return "must be true or false"
			}
		}
		return "is malformed"
	}
	if re.Err != nil {
		return re.Err.Error()
	}
	return re.Reason
}

// schemaReason says which value broke which rule: "title: maximum string
// length is 200", "competencies[0].weight: number must be more than 0".
func schemaReason(se *openapi3.SchemaError) string {
	// A schema wrapped in allOf (to give a $ref a default or nullable)
	// fails with its inner error as the origin: report that one.
	var inner *openapi3.SchemaError
	for se.SchemaField == "allOf" && errors.As(se.Origin, &inner) && inner != se {
		se = inner
	}
	field := fieldPath(se.JSONPointer())
	reason := se.Reason
	switch se.SchemaField {
	case "required":
		// The path ends with the missing property.
		return field + " is required"
	case "properties":
		// Not allowed by additionalProperties: false; the path is the
		// object's, the reason names the property.
		if name, ok := quoted(se.Reason); ok && strings.HasSuffix(se.Reason, "is unsupported") {
			return join(field, name) + " is not a known field"
		}
	case "format":
		switch se.Schema.Format {
		case "uuid":
			reason = "must be a UUID"
		case "email":
			reason = "must be an email address"
		case "date-time":
			reason = "must be an RFC 3339 date-time"
		}
	case "pattern":
		if se.Schema.Pattern == `\S` {
			reason = "must not be blank"
		}
	case "enum":
		vals := make([]string, 0, len(se.Schema.Enum))
		for _, e := range se.Schema.Enum {
			vals = append(vals, fmt.Sprint(e))
		}
		reason = "must be one of " + strings.Join(vals, ", ")
	}
	if field == "" {
		return reason
	}
	return field + ": " + reason
}

// fieldPath writes a JSON pointer's tokens as competencies[0].weight.
func fieldPath(tokens []string) string {
	var b strings.Builder
	for _, t := range tokens {
		if _, err := strconv.Atoi(t); err == nil {
			b.WriteString("[" + t + "]")
			continue
		}
		if b.Len() > 0 {
			b.WriteByte('.')
		}
		b.WriteString(t)
	}
	return b.String()
}

func join(field, name string) string {
	if field == "" {
		return name
	}
	return field + "." + name
}

// quoted returns the first double-quoted word of s.
func quoted(s string) (string, bool) {
	_, rest, ok := strings.Cut(s, `"`)
	if !ok {
		return "", false
	}
	name, _, ok := strings.Cut(rest, `"`)
	return name, ok && name != ""
}
