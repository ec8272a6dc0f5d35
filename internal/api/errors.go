package api

import (
	"context"
	"errors"
	"net/http"

	"github.com/bangerdev/banger/internal/errkind"
)

// Error codes carried in error bodies.
const (
	CodeNotFound        = "not_found"
	CodeAlreadyExists   = "already_exists"
	CodeInvalidArgument = "invalid_argument"
	CodeConflict        = "conflict"
	CodeUnavailable     = "unavailable"
	CodeCanceled        = "canceled"
	CodeInternal        = "internal"
)

// errorTable is the one place domain error kinds map to API codes and HTTP
// statuses. The client uses it in reverse to rebuild typed errors.
var errorTable = []struct {
	kind   *errkind.Kind
	code   string
	status int
}{
	{errkind.NotFound, CodeNotFound, http.StatusNotFound},
	{errkind.AlreadyExists, CodeAlreadyExists, http.StatusConflict},
	{errkind.InvalidArgument, CodeInvalidArgument, http.StatusBadRequest},
	{errkind.Conflict, CodeConflict, http.StatusConflict},
	{errkind.Unavailable, CodeUnavailable, http.StatusServiceUnavailable},
	{errkind.Canceled, CodeCanceled, 499},
}

// Error is the JSON error body.
type Error struct {
	Code    string `json:"code"`
	Message string `json:"message"`
	Hint    string `json:"hint,omitempty"`
}

// ErrorResponse wraps Error for non-streaming responses.
type ErrorResponse struct {
	Error Error `json:"error"`
}

// FromError maps a domain error to an HTTP status and error body.
func FromError(err error) (int, Error) {
	body := Error{Code: CodeInternal, Message: err.Error(), Hint: errkind.Hint(err)}
	if errors.Is(err, errkind.Canceled) || errors.Is(err, context.Canceled) {
		return 499, Error{Code: CodeCanceled, Message: err.Error()}
	}
	for _, e := range errorTable {
		if errors.Is(err, e.kind) {
			body.Code = e.code
			return e.status, body
		}
	}
	return http.StatusInternalServerError, body
}

// Err rebuilds a typed error from an error body, so that errors.Is with the
// errkind sentinels works on the client side.
func (e Error) Err() error {
	var err error = errors.New(e.Message)
	for _, t := range errorTable {
		if t.code == e.Code {
			err = errkind.New(t.kind, "%s", e.Message)
			break
		}
	}
	if e.Hint != "" {
		err = errkind.WithHint(err, e.Hint)
	}
	return err
}
