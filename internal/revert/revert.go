// Package revert undoes the completed steps of a multi-step operation, in
// reverse order, when a later step fails.
package revert

import (
	"errors"
	"fmt"
	"log/slog"
)

// Stack records undo steps. The zero value is ready to use.
type Stack struct {
	steps []step
	done  bool
}

type step struct {
	what string
	undo func() error
}

// Push records how to undo a step that just succeeded.
func (s *Stack) Push(what string, undo func() error) {
	s.steps = append(s.steps, step{what, undo})
}

// Release forgets every step: the operation succeeded.
func (s *Stack) Release() { s.done = true; s.steps = nil }

// Unwind runs the undo steps in reverse order unless Release was called.
// Every step runs even when an earlier one fails; failures are logged and
// returned joined.
func (s *Stack) Unwind(log *slog.Logger) error {
	if s.done {
		return nil
	}
	var errs []error
	for i := len(s.steps) - 1; i >= 0; i-- {
		st := s.steps[i]
		if err := st.undo(); err != nil {
			if log != nil {
				log.Warn("undo failed", "step", st.what, "err", err)
			}
			errs = append(errs, fmt.Errorf("undoing %s: %w", st.what, err))
		}
	}
	s.steps = nil
	s.done = true
	return errors.Join(errs...)
}
