package session

import (
	"errors"
	"fmt"
)

// Error codes of the API contract. Each maps to one HTTP status in
// controlapi; the string is what clients see in error.code.
const (
	EINVALID         = "invalid_request"
	EUNAUTHENTICATED = "unauthenticated"
	EFORBIDDEN       = "forbidden"
	ENOTFOUND        = "not_found"
	ECONFLICT        = "conflict"
	ETOOLARGE        = "too_large"
	ERATELIMITED     = "rate_limited"
	EQUOTA           = "quota_exceeded"
	EUNAVAILABLE     = "unavailable"
	EBADGATEWAY      = "bad_gateway"
	EGATEWAYTIMEOUT  = "gateway_timeout"
	EINTERNAL        = "internal"
	// EIDEMPOTENCYREUSED: an Idempotency-Key sent again with another request.
	EIDEMPOTENCYREUSED = "idempotency_key_reused"
	// EIDEMPOTENCYINFLIGHT: an Idempotency-Key whose first request still runs.
	EIDEMPOTENCYINFLIGHT = "idempotency_key_in_flight"
)

// Error is a domain error with a code from the contract and a message
// safe to show a client.
type Error struct {
	Code    string
	Message string
}

// Error implements error.
func (e *Error) Error() string { return e.Code + ": " + e.Message }

// Errorf returns an *Error with the given code and formatted message.
func Errorf(code, format string, args ...any) *Error {
	return &Error{Code: code, Message: fmt.Sprintf(format, args...)}
}

// ErrorCode returns the code of the first *Error in err's chain, or
// EINTERNAL for any other non-nil error.
func ErrorCode(err error) string {
	if err == nil {
		return ""
	}
	var e *Error
	if errors.As(err, &e) {
		return e.Code
	}
	return EINTERNAL
}

// ErrorMessage returns the client-safe message of err.
func ErrorMessage(err error) string {
	var e *Error
	if errors.As(err, &e) {
		return e.Message
	}
	return "internal error"
}
