// Package errkind classifies domain errors into the small set of kinds the
// API reports (not found, already exists, invalid argument, conflict,
// unavailable). Domain packages wrap one of the sentinels; the API layer maps
// kinds to status codes in a single table.
package errkind

import (
	"errors"
	"fmt"
)

// Kind is a class of domain error.
type Kind struct{ name string }

func (k *Kind) Error() string { return k.name }

// The kinds of domain errors. Anything else is internal.
var (
	NotFound        = &Kind{"not found"}
	AlreadyExists   = &Kind{"already exists"}
	InvalidArgument = &Kind{"invalid argument"}
	Conflict        = &Kind{"conflict"}
	Unavailable     = &Kind{"unavailable"}
	Canceled        = &Kind{"canceled"}
)

type kindError struct {
	kind *Kind
	msg  string
	hint string
	err  error // optional wrapped cause
}

func (e *kindError) Error() string {
	if e.err != nil {
		return e.msg + ": " + e.err.Error()
	}
	return e.msg
}

func (e *kindError) Unwrap() []error {
	if e.err != nil {
		return []error{e.kind, e.err}
	}
	return []error{e.kind}
}

// New returns an error of the given kind with a formatted message.
func New(k *Kind, format string, args ...any) error {
	return &kindError{kind: k, msg: fmt.Sprintf(format, args...)}
}

// Wrap returns an error of the given kind that wraps cause.
func Wrap(k *Kind, cause error, format string, args ...any) error {
	return &kindError{kind: k, msg: fmt.Sprintf(format, args...), err: cause}
}

// WithHint attaches a short hint (shown by the CLI under the error line).
func WithHint(err error, hint string) error {
	return &hinted{err: err, hint: hint}
}

type hinted struct {
	err  error
	hint string
}

func (h *hinted) Error() string { return h.err.Error() }
func (h *hinted) Unwrap() error { return h.err }

// Hint returns the first hint attached to err, if any.
func Hint(err error) string {
	var h *hinted
	if errors.As(err, &h) {
		return h.hint
	}
	return ""
}

// Of returns the kind of err, or nil when err has none (internal).
func Of(err error) *Kind {
	for _, k := range []*Kind{NotFound, AlreadyExists, InvalidArgument, Conflict, Unavailable, Canceled} {
		if errors.Is(err, k) {
			return k
		}
	}
	return nil
}
