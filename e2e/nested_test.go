package e2e

import (
	"bufio"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/bangerdev/banger/internal/testenv"
)

// TestNestedFirecracker runs the nested lab (scripts/nested-lab, described
// in docs/firecracker.md): an L1 guest under QEMU TCG with emulated AMD-V
// runs, with real KVM, the Firecracker driver tests including the vmmtest
// conformance suite, the QEMU conformance suite for comparison, and a
// `vm create --vmm firecracker` / `vm exec -- uname -r` / `vm stop` /
// `vm delete` cycle through the CLI and daemon, and a network check: the
// daemon's bridge, tap and nftables inside L1 with a `--net private`
// Firecracker VM that L1 pings, fetches HTTP from and resolves as
// NAME.vm. It takes several minutes,
// so it only runs with BANGER_E2E_NESTED=1 and a Firecracker binary in
// BANGER_FIRECRACKER_BIN (BANGER_JAILER_BIN adds the jailer tests).
// BANGER_LAB_OUT keeps the lab directory (console log, per-step logs).
func TestNestedFirecracker(t *testing.T) {
	if os.Getenv("BANGER_E2E_NESTED") != "1" {
		t.Skip("the nested lab takes minutes: set BANGER_E2E_NESTED=1 and BANGER_FIRECRACKER_BIN to run it")
	}
	if os.Getenv("BANGER_FIRECRACKER_BIN") == "" {
		t.Skip("BANGER_FIRECRACKER_BIN is not set (see docs/firecracker.md for obtaining Firecracker)")
	}
	if os.Geteuid() != 0 {
		t.Skip("the lab builds its image as root")
	}
	for _, tool := range []string{"qemu-system-x86_64", "mkfs.ext4", "debugfs", "go"} {
		if _, err := testenv.LookBinary(tool); err != nil {
			t.Skipf("%s not installed", tool)
		}
	}
	root, err := testenv.ModuleRoot()
	if err != nil {
		t.Fatal(err)
	}
	out := os.Getenv("BANGER_LAB_OUT")
	if out == "" {
		out = t.TempDir()
	}
	start := time.Now()
	lab(t, filepath.Join(root, "scripts/nested-lab/build.sh"), out, 20*time.Minute)
	built := time.Since(start)
	runErr := labRun(t, filepath.Join(root, "scripts/nested-lab/run.sh"), out, 100*time.Minute)
	total := time.Since(start)

	summary, err := os.ReadFile(filepath.Join(out, "results", "out", "summary.txt"))
	if err != nil {
		t.Fatalf("no lab results (%v); run: %v\nconsole tail:\n%s", err, runErr, tail(filepath.Join(out, "console.log"), 60))
	}
	t.Logf("lab: build %v, total %v\n%s", built.Round(time.Second), total.Round(time.Second), summary)
	if runErr != nil {
		t.Errorf("run.sh: %v", runErr)
	}
	s := string(summary)
	for _, want := range []string{
		"PASS fc-driver", "PASS qemu-conformance", "PASS cycle", "\ndone ",
		// The conformance subtests must pass, not skip, under Firecracker.
		"fc-driver:     --- PASS: TestConformance/BootExecPoweroff",
		"fc-driver:     --- PASS: TestConformance/AdoptKill",
		"fc-driver:     --- PASS: TestConformance/Shutdown",
		"fc-driver:     --- PASS: TestConformance/BadKernel",
		"cycle: firecracker create/exec/stop/delete ok", "cycle: firecracker guest modprobe ok",
		"PASS net", "net: n-fc host->guest ping ok", "net: n-fc host->guest http ok",
		"net: n-fc.vm resolves to", "net: n-fc private networking ok",
	} {
		if !strings.Contains(s, want) {
			t.Errorf("lab summary lacks %q", want)
		}
	}
	if strings.Contains(s, "\nFAIL") {
		t.Error("a lab step failed")
	}
	for _, row := range bootTimings(s) {
		t.Log(row)
	}
}

// lab runs a lab script and fails the test if it fails.
func lab(t *testing.T, script, out string, timeout time.Duration) {
	t.Helper()
	if err := labRun(t, script, out, timeout); err != nil {
		t.Fatalf("%s: %v", filepath.Base(script), err)
	}
}

// labRun runs a lab script with its output in <out>/<script>.log.
func labRun(t *testing.T, script, out string, timeout time.Duration) error {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	logPath := filepath.Join(out, filepath.Base(script)+".log")
	log, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	defer log.Close()
	cmd := exec.CommandContext(ctx, "bash", script, out)
	cmd.Stdout, cmd.Stderr = log, log
	cmd.WaitDelay = 30 * time.Second
	start := time.Now()
	err = cmd.Run()
	t.Logf("%s: %v (%v)", filepath.Base(script), errOrOK(err), time.Since(start).Round(time.Second))
	if err != nil {
		t.Logf("%s log tail:\n%s", filepath.Base(script), tail(logPath, 40))
	}
	return err
}

func errOrOK(err error) string {
	if err == nil {
		return "ok"
	}
	return err.Error()
}

func tail(path string, n int) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return err.Error()
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// bootTimings extracts the L2 boot timings the conformance suites log
// ("boot returned after X, agent healthy after Y") and the CLI cycle's
// create times, one line per measurement.
func bootTimings(summary string) []string {
	re := regexp.MustCompile(`^\s*(fc-driver|qemu-conformance|cycle|net): .*(boot returned after \S+, agent healthy after \S+|poweroff to exit: \S+|shutdown took \S+|cycle: \S+ vm (create|stop) \S+|net: \S+ (vm (create|stop)|host->guest (ping|http) ok) \S+)`)
	var rows []string
	sc := bufio.NewScanner(strings.NewReader(summary))
	for sc.Scan() {
		if m := re.FindStringSubmatch(sc.Text()); m != nil {
			rows = append(rows, m[1]+": "+m[2])
		}
	}
	return rows
}
