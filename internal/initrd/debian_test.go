package initrd

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/bangerdev/banger/internal/kernel/kerneltest"
)

// debianModules unpacks lib/modules/<release> from the cached Debian cloud
// kernel package and returns its path.
func debianModules(t *testing.T) string {
	t.Helper()
	if testing.Short() {
		t.Skip("real-kernel test skipped in -short mode")
	}
	deb := kerneltest.DebianCloudDeb(t)
	if _, err := exec.LookPath("dpkg-deb"); err != nil {
		t.Skip("dpkg-deb not installed")
	}
	dir := t.TempDir()
	cmd := exec.Command("sh", "-c", `dpkg-deb --fsys-tarfile "$1" | tar -x -C "$2" ./lib/modules`, "sh", deb, dir)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("unpacking modules from %s: %v: %s", deb, err, out)
	}
	m, _ := filepath.Glob(filepath.Join(dir, "lib", "modules", "*"))
	if len(m) != 1 {
		t.Fatalf("found %v under lib/modules", m)
	}
	return m[0]
}

func TestDebianCloudModules(t *testing.T) {
	dir := debianModules(t)
	plan, err := Resolve(dir, DefaultModules())
	if err != nil {
		t.Fatal(err)
	}
	// Measured in the boot lab (notes/boot-lab.md §3.2), plus overlay; ext4
	// is built into this kernel.
	want := strings.Fields("virtio_ring virtio virtio_mmio virtio_blk virtio_console failover net_failover virtio_net " +
		"vsock vmw_vsock_virtio_transport_common vmw_vsock_virtio_transport overlay button evdev")
	if got := plan.Order(); !slices.Equal(got, want) {
		t.Fatalf("load order\n got %v\nwant %v", got, want)
	}
	if !slices.Equal(plan.Builtin, []string{"ext4"}) || len(plan.Absent) != 0 {
		t.Fatalf("builtin %v absent %v", plan.Builtin, plan.Absent)
	}
	release := filepath.Base(dir)
	for _, m := range plan.Modules {
		mi, err := ReadModinfo(m.Data)
		if err != nil {
			t.Fatal(err)
		}
		if mi.Name != m.Name || !strings.HasPrefix(mi.Vermagic, release+" ") {
			t.Errorf("%s: name %q vermagic %q, want release %s", m.Name, mi.Name, mi.Vermagic, release)
		}
	}

	// Build a real initrd with a real static binary standing in for the agent.
	agent, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(t.TempDir(), "initrd.img")
	start := time.Now()
	res, err := BuildResult(context.Background(), Spec{AgentPath: agent, ModulesDir: dir}, out)
	if err != nil {
		t.Fatal(err)
	}
	agentSize := int64(0)
	if fi, err := os.Stat(agent); err == nil {
		agentSize = fi.Size()
	}
	t.Logf("initrd %d bytes (agent stand-in %d bytes, modules %d bytes) built in %v",
		res.Size, agentSize, res.Size-agentSize, time.Since(start))
	archive := readArchive(t, out)
	var load []string
	for _, n := range want {
		load = append(load, "/lib/modules/"+n+".ko")
	}
	if got := string(archive["etc/modules.load"].data); got != strings.Join(load, "\n")+"\n" {
		t.Fatalf("modules.load = %q", got)
	}
}
