package vmproc

import (
	"bytes"
	"fmt"
	"os"
	"strconv"
	"strings"
)

// Stat is the part of /proc/<pid>/stat that identifies a process.
type Stat struct {
	State     byte   // R, S, D, Z, X, ...
	StartTime uint64 // clock ticks after boot
}

// Zombie reports whether the process has exited (awaiting or past reaping).
func (s Stat) Zombie() bool { return s.State == 'Z' || s.State == 'X' || s.State == 'x' }

// StartTimeOf reads /proc/<pid>/stat.
func StartTimeOf(pid int) (Stat, error) {
	data, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return Stat{}, fmt.Errorf("reading stat of pid %d: %w", pid, err)
	}
	return parseStat(data)
}

// parseStat parses a stat line. The command name (field 2) may contain
// spaces and parentheses, so fields are counted after the last ')'.
func parseStat(data []byte) (Stat, error) {
	i := bytes.LastIndexByte(data, ')')
	if i < 0 {
		return Stat{}, fmt.Errorf("malformed stat line %q", data)
	}
	f := strings.Fields(string(data[i+1:]))
	// f[0] is field 3 (state); field 22 (starttime) is f[19].
	if len(f) < 20 || len(f[0]) != 1 {
		return Stat{}, fmt.Errorf("malformed stat line %q", data)
	}
	st, err := strconv.ParseUint(f[19], 10, 64)
	if err != nil {
		return Stat{}, fmt.Errorf("parsing start time %q: %w", f[19], err)
	}
	return Stat{State: f[0][0], StartTime: st}, nil
}

// CmdlineOf returns the arguments of pid from /proc/<pid>/cmdline.
func CmdlineOf(pid int) ([]string, error) {
	data, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/cmdline")
	if err != nil {
		return nil, fmt.Errorf("reading command line of pid %d: %w", pid, err)
	}
	data = bytes.TrimRight(data, "\x00")
	if len(data) == 0 {
		return nil, nil
	}
	return strings.Split(string(data), "\x00"), nil
}
