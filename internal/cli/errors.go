package cli

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/bangerdev/banger/internal/client"
	"github.com/bangerdev/banger/internal/errkind"
)

// Exit codes of the banger command (documented in docs/cli.md).
const (
	ExitOK          = 0
	ExitError       = 1   // the operation failed
	ExitUsage       = 2   // bad flags or arguments
	ExitUnavailable = 3   // the daemon could not be reached or started
	ExitNotFound    = 4   // the named VM, image or kernel does not exist
	ExitAgentLost   = 255 // `vm exec`/`vm run`: the guest agent channel dropped
)

type exitError struct {
	code  int
	err   error
	quiet bool // already reported (e.g. a remote command's own status)
}

func (e *exitError) Error() string {
	if e.err == nil {
		return fmt.Sprintf("exit status %d", e.code)
	}
	return e.err.Error()
}
func (e *exitError) Unwrap() error { return e.err }

func usageErrorf(format string, args ...any) error {
	return &exitError{code: ExitUsage, err: fmt.Errorf(format, args...)}
}

// exitCode returns a command's own exit status without printing anything.
func exitCode(code int) error { return &exitError{code: code, quiet: true} }

// printError prints one line "banger: …" and a hint where one helps, and
// returns the exit code.
func (a *App) printError(err error) int {
	code := ExitError
	var ee *exitError
	if errors.As(err, &ee) {
		code = ee.code
	} else if isCobraUsage(err) {
		code = ExitUsage
	}
	hint := errkind.Hint(err)
	switch {
	case errors.Is(err, client.ErrNoDaemon), errors.Is(err, errkind.Unavailable):
		if code == ExitError {
			code = ExitUnavailable
		}
		if hint == "" {
			hint = "check `banger daemon logs` and `banger doctor`"
		}
	case errors.Is(err, errkind.NotFound):
		if code == ExitError {
			code = ExitNotFound
		}
	case errors.Is(err, context.Canceled):
		hint = ""
	}
	if code == ExitUsage && hint == "" {
		hint = "see --help"
	}
	msg := strings.TrimSpace(err.Error())
	msg = strings.ReplaceAll(msg, "\n", " ")
	fmt.Fprintf(a.Stderr, "banger: %s\n", msg)
	if hint != "" {
		fmt.Fprintf(a.Stderr, "hint: %s\n", hint)
	}
	return code
}

// isCobraUsage recognises cobra's own argument errors.
func isCobraUsage(err error) bool {
	m := err.Error()
	for _, p := range []string{"unknown command", "unknown flag", "unknown shorthand", "accepts ", "requires at least", "requires at most", "invalid argument", "flag needs an argument", "required flag"} {
		if strings.HasPrefix(m, p) {
			return true
		}
	}
	return false
}
