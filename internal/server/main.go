package server

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"strings"

	"github.com/bangerdev/banger/internal/buildinfo"
	"github.com/bangerdev/banger/internal/errkind"
	"github.com/bangerdev/banger/internal/paths"
	"github.com/bangerdev/banger/internal/store"
)

// Main is bangerd's entry point; it returns the process exit code.
//
//	bangerd                      serve (user mode, XDG paths or BANGER_HOME)
//	bangerd --system             serve with /var/lib/banger, /run/banger, …
//	bangerd --check-migrations   exit 0 up to date, 1 pending (safe), 2 newer than binary
func Main(ctx context.Context, args []string, stderr io.Writer) int {
	fs := flag.NewFlagSet("bangerd", flag.ContinueOnError)
	fs.SetOutput(stderr)
	system := fs.Bool("system", false, "run as a system service (/var/lib/banger, /run/banger)")
	check := fs.Bool("check-migrations", false, "report whether the database needs migrations and exit (0 up to date, 1 pending, 2 newer than this binary)")
	version := fs.Bool("version", false, "print the version and exit")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if *version {
		fmt.Fprintf(stderr, "bangerd %s\n", buildinfo.String())
		return 0
	}
	layout, err := paths.User()
	if err != nil {
		fmt.Fprintf(stderr, "bangerd: %v\n", err)
		return 1
	}
	if *system {
		layout = paths.System()
	}
	if *check {
		return checkMigrations(ctx, layout, stderr)
	}
	if err := Run(ctx, Options{Layout: layout, LogOutput: stderr}); err != nil {
		fmt.Fprintf(stderr, "bangerd: %s\n", strings.ReplaceAll(err.Error(), "\n", " "))
		if h := errkind.Hint(err); h != "" {
			fmt.Fprintf(stderr, "hint: %s\n", h)
		}
		if errors.Is(err, store.ErrNewerDatabase) {
			return 2
		}
		return 1
	}
	return 0
}

func checkMigrations(ctx context.Context, l paths.Layout, w io.Writer) int {
	st, err := store.Status(ctx, l.DBPath())
	if err != nil {
		fmt.Fprintf(w, "bangerd: %v\n", err)
		return 3
	}
	switch {
	case st.Current > st.Latest:
		fmt.Fprintf(w, "database %s is at version %d, newer than this binary (%d)\n", l.DBPath(), st.Current, st.Latest)
		return 2
	case st.Pending():
		fmt.Fprintf(w, "database %s is at version %d; %d migration(s) pending (safe)\n", l.DBPath(), st.Current, st.Latest-st.Current)
		return 1
	default:
		fmt.Fprintf(w, "database %s is up to date (version %d)\n", l.DBPath(), st.Current)
		return 0
	}
}
