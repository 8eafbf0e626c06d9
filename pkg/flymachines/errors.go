package flymachines

import (
	"errors"
	"fmt"
	"net/http"
	"strings"
)

// Sentinels matched by errors.Is against an *Error (and, for
// ErrRateLimited, against a client-side rate-limit wait that cannot finish
// before the context's deadline).
var (
	ErrBadRequest   = errors.New("fly: bad request")           // 400
	ErrUnauthorized = errors.New("fly: unauthorized")          // 401
	ErrForbidden    = errors.New("fly: forbidden")             // 403
	ErrNotFound     = errors.New("fly: not found")             // 404
	ErrTimeout      = errors.New("fly: request timeout")       // 408
	ErrConflict     = errors.New("fly: conflict")              // 409
	ErrPrecondition = errors.New("fly: precondition failed")   // 412
	ErrRateLimited  = errors.New("fly: rate limited")          // 429
	ErrServer       = errors.New("fly: server error")          // 5xx
	ErrNameTaken    = errors.New("fly: machine name taken")    // status name_taken
	ErrCapacity     = errors.New("fly: insufficient capacity") // capacity or quota
	// ErrDestroyed is returned by Wait when the machine was destroyed
	// before reaching the state waited for.
	ErrDestroyed = errors.New("fly: machine destroyed")
)

// Fly's error status codes (the "status" field of an error answer).
const (
	StatusNameTaken               = "name_taken"
	StatusInsufficientCapacity    = "insufficient_capacity"
	StatusVolumePlacementCapacity = "volume_placement_capacity"
)

// Error is a non-2xx answer of the Machines API.
type Error struct {
	// Op is the client operation ("create", "get", "wait", ...).
	Op     string
	Method string
	Path   string
	// StatusCode is the HTTP status.
	StatusCode int
	// Status is Fly's error code from the body ("name_taken",
	// "insufficient_capacity"), if any.
	Status string
	// Message is Fly's error text ("error" or "message" of the body, or
	// the body itself when it is not JSON).
	Message string
	// Body is the raw answer, truncated to a few KiB.
	Body string
	// RequestID is Fly's fly-request-id header: quote it to Fly support.
	RequestID string
}

// Error implements error.
func (e *Error) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "fly machines api %s %s: %d %s", e.Method, e.Path, e.StatusCode, http.StatusText(e.StatusCode))
	if e.Message != "" {
		b.WriteString(": ")
		b.WriteString(e.Message)
	}
	if e.Status != "" {
		fmt.Fprintf(&b, " (status %s)", e.Status)
	}
	if e.RequestID != "" {
		fmt.Fprintf(&b, " [fly-request-id %s]", e.RequestID)
	}
	return b.String()
}

// Is matches the package's sentinels.
func (e *Error) Is(target error) bool {
	switch target {
	case ErrBadRequest:
		return e.StatusCode == http.StatusBadRequest
	case ErrUnauthorized:
		return e.StatusCode == http.StatusUnauthorized
	case ErrForbidden:
		return e.StatusCode == http.StatusForbidden
	case ErrNotFound:
		return e.StatusCode == http.StatusNotFound
	case ErrTimeout:
		return e.StatusCode == http.StatusRequestTimeout
	case ErrConflict:
		return e.StatusCode == http.StatusConflict
	case ErrPrecondition:
		return e.StatusCode == http.StatusPreconditionFailed
	case ErrRateLimited:
		return e.StatusCode == http.StatusTooManyRequests
	case ErrServer:
		return e.StatusCode >= 500
	case ErrNameTaken:
		return e.nameTaken()
	case ErrCapacity:
		return e.capacity()
	}
	return false
}

func (e *Error) nameTaken() bool {
	if e.Status == StatusNameTaken {
		return true
	}
	// Older answers carry no status code: match the text, as flyctl does.
	if e.StatusCode != http.StatusConflict && e.StatusCode != http.StatusUnprocessableEntity {
		return false
	}
	m := strings.ToLower(e.Message)
	return strings.Contains(m, "name") && (strings.Contains(m, "taken") || strings.Contains(m, "already exists"))
}

func (e *Error) capacity() bool {
	switch e.Status {
	case StatusInsufficientCapacity, StatusVolumePlacementCapacity:
		return true
	}
	switch e.StatusCode {
	case http.StatusForbidden, http.StatusConflict, http.StatusPreconditionFailed, http.StatusBadRequest:
	default:
		return false
	}
	m := strings.ToLower(e.Message)
	for _, s := range []string{"capacity", "insufficient", "could not reserve resource", "over the allowed quota"} {
		if strings.Contains(m, s) {
			return true
		}
	}
	return false
}

// rateLimitError is returned when the client-side limiter cannot admit a
// request before the context ends. The request was never sent.
type rateLimitError struct {
	op  string
	err error
}

func (e *rateLimitError) Error() string {
	return fmt.Sprintf("fly machines api %s: client rate limit: %v", e.op, e.err)
}

func (e *rateLimitError) Unwrap() error { return e.err }

func (e *rateLimitError) Is(target error) bool { return target == ErrRateLimited }
