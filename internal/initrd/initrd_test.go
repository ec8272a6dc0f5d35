package initrd

import (
	"bytes"
	"context"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/bangerdev/banger/internal/errkind"
	"github.com/bangerdev/banger/internal/initrd/cpio"
)

// synthTree lays out a fake lib/modules/<release> tree:
//
//	top -> mid_a, mid-b (file spelled with a dash); mid_a -> base; mid_b -> base, leaf
//	solo (no deps), ext4 built in, compressed variants of several.
func synthTree(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	writeModule(t, dir, "kernel/drivers/top.ko", fakeModule("top", "mid_a", "mid_b"))
	writeModule(t, dir, "kernel/drivers/mid/mid_a.ko.xz", fakeModule("mid_a", "base"))
	writeModule(t, dir, "kernel/drivers/mid/mid-b.ko.zst", fakeModule("mid_b", "base", "leaf"))
	writeModule(t, dir, "kernel/lib/base.ko.gz", fakeModule("base"))
	writeModule(t, dir, "kernel/lib/leaf.ko", fakeModule("leaf"))
	writeModule(t, dir, "kernel/fs/solo.ko", fakeModule("solo"))
	writeModule(t, dir, "kernel/fs/cyc1.ko", fakeModule("cyc1", "cyc2"))
	writeModule(t, dir, "kernel/fs/cyc2.ko", fakeModule("cyc2", "cyc1"))
	writeModule(t, dir, "kernel/fs/broken.ko", fakeModule("broken", "nowhere"))
	if err := os.WriteFile(filepath.Join(dir, "modules.builtin"), []byte("kernel/fs/ext4/ext4.ko\nkernel/fs/binfmt_script.ko\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	return dir
}

func TestResolveOrder(t *testing.T) {
	dir := synthTree(t)
	plan, err := Resolve(dir, []string{"top", "ext4", "solo", "mid-b"})
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"base", "mid_a", "leaf", "mid_b", "top", "solo"}
	if got := plan.Order(); !slices.Equal(got, want) {
		t.Fatalf("order = %v, want %v", got, want)
	}
	if !slices.Equal(plan.Builtin, []string{"ext4"}) || len(plan.Absent) != 0 {
		t.Fatalf("builtin = %v absent = %v", plan.Builtin, plan.Absent)
	}
	// Every module's data is the decompressed ELF.
	for _, m := range plan.Modules {
		mi, err := ReadModinfo(m.Data)
		if err != nil || mi.Name != m.Name {
			t.Errorf("%s: modinfo %+v, %v", m.Name, mi, err)
		}
	}
}

func TestResolveErrors(t *testing.T) {
	dir := synthTree(t)
	for _, tc := range []struct {
		roots []string
		kind  *errkind.Kind
	}{
		{[]string{"nosuch"}, errkind.NotFound},
		{[]string{"broken"}, errkind.NotFound},
		{[]string{"cyc1"}, errkind.InvalidArgument},
	} {
		_, err := Resolve(dir, tc.roots)
		if !errors.Is(err, tc.kind) {
			t.Errorf("Resolve(%v) err = %v, want %v", tc.roots, err, tc.kind)
		}
	}
	// Without modules.builtin, an unknown root cannot be judged: it is
	// reported as absent, not an error.
	os.Remove(filepath.Join(dir, "modules.builtin"))
	plan, err := Resolve(dir, []string{"nosuch", "solo"})
	if err != nil || !slices.Equal(plan.Absent, []string{"nosuch"}) || !slices.Equal(plan.Order(), []string{"solo"}) {
		t.Fatalf("plan %+v, err %v", plan, err)
	}
}

type archiveEntry struct {
	hdr  cpio.Header
	data []byte
}

func readArchive(t *testing.T, path string) map[string]archiveEntry {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	r := cpio.NewReader(f)
	m := map[string]archiveEntry{}
	for {
		h, err := r.Next()
		if err == io.EOF {
			return m
		}
		if err != nil {
			t.Fatal(err)
		}
		data, err := io.ReadAll(r)
		if err != nil {
			t.Fatal(err)
		}
		m[h.Name] = archiveEntry{*h, data}
	}
}

func fakeAgent(t *testing.T, content string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "banger-agent")
	if err := os.WriteFile(p, []byte(content), 0o755); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestBuild(t *testing.T) {
	dir := synthTree(t)
	agent := fakeAgent(t, "\x7fELF fake agent binary")
	out := filepath.Join(t.TempDir(), "initrd.img")
	res, err := BuildResult(context.Background(), Spec{AgentPath: agent, ModulesDir: dir, Modules: []string{"top", "ext4"}}, out)
	if err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(out)
	if err != nil || fi.Size() != res.Size || fi.Size()%4 != 0 {
		t.Fatalf("stat %v, size %d vs result %d", err, fi.Size(), res.Size)
	}
	m := readArchive(t, out)

	init := m["init"]
	if string(init.data) != "\x7fELF fake agent binary" || init.hdr.Mode != cpio.TypeReg|0o755 {
		t.Errorf("init: mode %o data %q", init.hdr.Mode, init.data)
	}
	if c := m["dev/console"].hdr; c.Mode&cpio.TypeMask != cpio.TypeChar || c.Major != 5 || c.Minor != 1 {
		t.Errorf("dev/console = %+v", c)
	}
	if c := m["dev/null"].hdr; c.Mode&cpio.TypeMask != cpio.TypeChar || c.Major != 1 || c.Minor != 3 {
		t.Errorf("dev/null = %+v", c)
	}
	for _, d := range []string{"dev", "proc", "sys", "run", "tmp", "newroot", "etc", "lib/modules"} {
		if m[d].hdr.Mode&cpio.TypeMask != cpio.TypeDir {
			t.Errorf("%s missing or not a directory", d)
		}
	}
	wantOrder := []string{"base", "mid_a", "leaf", "mid_b", "top"}
	var load []string
	for _, n := range wantOrder {
		p := "/lib/modules/" + n + ".ko"
		load = append(load, p)
		e, ok := m[strings.TrimPrefix(p, "/")]
		if !ok {
			t.Fatalf("%s missing from the archive", p)
		}
		if mi, err := ReadModinfo(e.data); err != nil || mi.Name != n {
			t.Errorf("%s is not the uncompressed module: %+v %v", p, mi, err)
		}
	}
	if got := string(m["etc/modules.load"].data); got != strings.Join(load, "\n")+"\n" {
		t.Errorf("modules.load = %q", got)
	}
	if len(m) != 9+2+1+len(wantOrder)+1 {
		t.Errorf("archive has %d entries, want %d", len(m), 9+2+1+len(wantOrder)+1)
	}
	if res.AgentSHA256 == "" || !slices.Equal(res.Plan.Builtin, []string{"ext4"}) {
		t.Errorf("result %+v", res)
	}

	if _, err := exec.LookPath("cpio"); err == nil {
		listing, err := exec.Command("sh", "-c", `cpio -t --quiet < "$1"`, "sh", out).Output()
		if err != nil {
			t.Fatalf("cpio -t: %v", err)
		}
		names := strings.Fields(string(listing))
		if len(names) != len(m) || !slices.Contains(names, "lib/modules/top.ko") || !slices.Contains(names, "init") {
			t.Errorf("cpio -t listed %v", names)
		}
	}
}

func TestBuildNoModules(t *testing.T) {
	agent := fakeAgent(t, "agent")
	out := filepath.Join(t.TempDir(), "initrd.img")
	if err := Build(context.Background(), Spec{AgentPath: agent}, out); err != nil {
		t.Fatal(err)
	}
	m := readArchive(t, out)
	if string(m["init"].data) != "agent" || len(m["etc/modules.load"].data) != 0 {
		t.Fatalf("init %q, modules.load %q", m["init"].data, m["etc/modules.load"].data)
	}
	for name := range m {
		if strings.HasSuffix(name, ".ko") {
			t.Errorf("unexpected module %s", name)
		}
	}
}

func TestBuildErrors(t *testing.T) {
	ctx := context.Background()
	out := filepath.Join(t.TempDir(), "initrd.img")
	if err := Build(ctx, Spec{AgentPath: "/nonexistent/agent"}, out); !errors.Is(err, errkind.NotFound) {
		t.Errorf("missing agent: %v", err)
	}
	if err := Build(ctx, Spec{AgentPath: t.TempDir()}, out); !errors.Is(err, errkind.InvalidArgument) {
		t.Errorf("agent is a directory: %v", err)
	}
	agent := fakeAgent(t, "agent")
	if err := Build(ctx, Spec{AgentPath: agent, ModulesDir: "/nonexistent/modules"}, out); !errors.Is(err, errkind.NotFound) {
		t.Errorf("missing modules dir: %v", err)
	}
	if err := Build(ctx, Spec{AgentPath: agent, ModulesDir: synthTree(t), Modules: []string{"nosuch"}}, out); !errors.Is(err, errkind.NotFound) {
		t.Errorf("missing module: %v", err)
	}
	if _, err := os.Stat(out); !os.IsNotExist(err) {
		t.Errorf("failed builds left %s behind", out)
	}
	if left, _ := filepath.Glob(filepath.Join(filepath.Dir(out), "*")); len(left) != 0 {
		t.Errorf("failed builds left %v", left)
	}
}

func TestCached(t *testing.T) {
	ctx := context.Background()
	cache := filepath.Join(t.TempDir(), "initrd-cache")
	dir := synthTree(t)
	agent := fakeAgent(t, "agent v1")
	spec := Spec{AgentPath: agent, ModulesDir: dir, Modules: []string{"solo"}}

	p1, err := Cached(ctx, cache, "kernel-a", spec)
	if err != nil {
		t.Fatal(err)
	}
	st1, _ := os.Stat(p1)
	p2, err := Cached(ctx, cache, "kernel-a", spec)
	if err != nil || p2 != p1 {
		t.Fatalf("second call %s, %v; want cached %s", p2, err, p1)
	}
	if st2, _ := os.Stat(p2); !os.SameFile(st1, st2) {
		t.Error("cached initrd was rebuilt")
	}
	p3, err := Cached(ctx, cache, "kernel-b", spec)
	if err != nil || p3 == p1 {
		t.Fatalf("other kernel got %s, %v", p3, err)
	}
	if err := os.WriteFile(agent, []byte("agent v2"), 0o755); err != nil {
		t.Fatal(err)
	}
	p4, err := Cached(ctx, cache, "kernel-a", spec)
	if err != nil || p4 == p1 {
		t.Fatalf("new agent got %s, %v", p4, err)
	}
	if got := readArchive(t, p4)["init"].data; !bytes.Equal(got, []byte("agent v2")) {
		t.Fatalf("init = %q", got)
	}
	spec.Modules = []string{"top"}
	p5, err := Cached(ctx, cache, "kernel-a", spec)
	if err != nil || p5 == p4 {
		t.Fatalf("new module set got %s, %v", p5, err)
	}
}

func TestCachedNeedsKernelID(t *testing.T) {
	_, err := Cached(context.Background(), t.TempDir(), "", Spec{AgentPath: fakeAgent(t, "a")})
	if !errors.Is(err, errkind.InvalidArgument) {
		t.Fatalf("err = %v", err)
	}
}

func TestPruneCache(t *testing.T) {
	ctx := context.Background()
	cache := t.TempDir()
	agent := fakeAgent(t, "agent")
	old, err := Cached(ctx, cache, "kernel-old", Spec{AgentPath: agent})
	if err != nil {
		t.Fatal(err)
	}
	recent, err := Cached(ctx, cache, "kernel-new", Spec{AgentPath: agent})
	if err != nil {
		t.Fatal(err)
	}
	longAgo := time.Now().Add(-48 * time.Hour)
	os.Chtimes(old, longAgo, longAgo)
	os.Chtimes(recent, longAgo, longAgo)
	// A cache hit marks the file as used.
	if p, err := Cached(ctx, cache, "kernel-new", Spec{AgentPath: agent}); err != nil || p != recent {
		t.Fatalf("Cached = %s, %v", p, err)
	}
	removed, err := PruneCache(cache, 24*time.Hour)
	if err != nil || !slices.Equal(removed, []string{old}) {
		t.Fatalf("PruneCache removed %v, %v; want %s", removed, err, old)
	}
	if _, err := os.Stat(recent); err != nil {
		t.Fatal(err)
	}
}
