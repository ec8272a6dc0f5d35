package testenv

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/bangerdev/banger/internal/vmm/vmproc"
)

// QEMUPIDs lists the QEMU processes whose command line mentions substr
// (a BANGER_HOME, a run dir, a VM name).
func QEMUPIDs(substr string) []int {
	var pids []int
	ents, _ := os.ReadDir("/proc")
	for _, ent := range ents {
		pid, err := strconv.Atoi(ent.Name())
		if err != nil {
			continue
		}
		argv := ProcArgs(pid)
		if len(argv) > 0 && strings.Contains(filepath.Base(argv[0]), "qemu-system") &&
			strings.Contains(strings.Join(argv, " "), substr) {
			pids = append(pids, pid)
		}
	}
	return pids
}

// ProcArgs is a process's argv (nil when it is gone or a zombie).
func ProcArgs(pid int) []string {
	argv, _ := vmproc.CmdlineOf(pid)
	return argv
}
