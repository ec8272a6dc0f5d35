package imagebuild

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/bangerdev/banger/internal/dockerfile"
	"github.com/bangerdev/banger/internal/errkind"
)

func requireE2fs(t *testing.T) {
	t.Helper()
	for _, tool := range []string{"debugfs", "e2fsck", "resize2fs"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("%s not installed (e2fsprogs)", tool)
		}
	}
}

func writeFiles(t *testing.T, dir string, files map[string]string) {
	t.Helper()
	for name, body := range files {
		p := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

func plan(t *testing.T, src string) *dockerfile.Plan {
	t.Helper()
	df, err := dockerfile.Parse(strings.NewReader(src))
	if err != nil {
		t.Fatal(err)
	}
	p, err := df.Plan(dockerfile.Config{Env: []string{"PATH=/usr/local/bin:/usr/bin:/bin"}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// cat reads a file of an ext4 image.
func cat(t *testing.T, img, p string) string {
	t.Helper()
	out, err := exec.Command("debugfs", "-R", "cat "+p, img).Output()
	if err != nil {
		t.Fatalf("debugfs cat %s: %v", p, err)
	}
	return string(out)
}

// stat returns debugfs's stat output for a path ("" when missing).
func stat(t *testing.T, img, p string) string {
	t.Helper()
	cmd := exec.Command("debugfs", "-R", "stat "+p, img)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("debugfs stat %s: %v", p, err)
	}
	if strings.Contains(stderr.String(), "File not found") {
		return ""
	}
	return string(out)
}

func fsck(t *testing.T, img string) {
	t.Helper()
	if out, err := exec.Command("e2fsck", "-fn", img).CombinedOutput(); err != nil {
		t.Fatalf("e2fsck %s: %v\n%s", img, err, out)
	}
}

const testDockerfile = `FROM busybox
ENV GREETING=hello
RUN echo hi > /x && echo "$GREETING" > /greeting && rm /root/.profile
WORKDIR /app
COPY a.txt conf ./
COPY --chown=dev a.txt /owned.txt
RUN pwd > /pwd && cat /app/a.txt > /copied
LABEL stage=test
`

func TestBuildStepsCacheAndRebuild(t *testing.T) {
	requireE2fs(t)
	r := newChrootRunner(t)
	base := busyboxBaseDir(t)
	bctx := t.TempDir()
	writeFiles(t, bctx, map[string]string{
		"a.txt": "context file\n", "conf/x.conf": "x=1\n", "conf/sub/y": "y\n",
		"conf/secret": "do not copy\n", ".dockerignore": "conf/secret\n*.tmp\n", "junk.tmp": "",
	})
	b := &Builder{CacheDir: t.TempDir(), Runner: r}
	out := filepath.Join(t.TempDir(), "rootfs.ext4")
	var log bytes.Buffer
	req := Request{Plan: plan(t, testDockerfile), Context: bctx, Base: Base{Rootfs: base, Digest: "sha256:base"}, Output: out, Log: &log}
	res, err := b.Build(context.Background(), req)
	if err != nil {
		t.Fatalf("build: %v\nlog:\n%s", err, log.String())
	}
	if res.Cached || len(res.Steps) != 5 || res.Bytes == 0 {
		t.Fatalf("result = %+v", res)
	}
	for _, s := range res.Steps {
		if s.Cached {
			t.Errorf("first build served %q from cache", s.Text)
		}
	}
	// One boot up to and including the first RUN, one for the rest and
	// the export; all stopped.
	if r.boots != 2 || r.running != 0 {
		t.Fatalf("boots %d, running %d", r.boots, r.running)
	}
	fsck(t, out)
	checks := map[string]string{
		"/x": "hi\n", "/greeting": "hello\n", "/pwd": "/app\n", "/copied": "context file\n",
		"/app/a.txt": "context file\n", "/app/x.conf": "x=1\n", "/app/sub/y": "y\n",
		"/etc/hostname": "busybox\n", "/etc/hosts": "127.0.0.1\tlocalhost\n::1\tlocalhost\n",
	}
	for p, want := range checks {
		if got := cat(t, out, p); got != want {
			t.Errorf("%s = %q, want %q", p, got, want)
		}
	}
	if stat(t, out, "/root/.profile") != "" {
		t.Error("/root/.profile deleted by RUN is back")
	}
	if stat(t, out, "/app/secret") != "" {
		t.Error(".dockerignore'd file copied")
	}
	if st := stat(t, out, "/owned.txt"); !strings.Contains(st, "User:  1000   Group:  1000") {
		t.Errorf("--chown=dev not applied:\n%s", st)
	}
	if st := stat(t, out, "/bin/busybox"); !strings.Contains(st, "Mode:  0755") {
		t.Errorf("busybox mode lost:\n%s", st)
	}
	if !strings.Contains(log.String(), "#1/5 RUN echo hi") {
		t.Errorf("log lacks step headers:\n%s", log.String())
	}

	// The same build again comes from the cache without booting anything.
	out2 := filepath.Join(t.TempDir(), "rootfs.ext4")
	req.Output = out2
	start := time.Now()
	res2, err := b.Build(context.Background(), req)
	if err != nil {
		t.Fatal(err)
	}
	if !res2.Cached || r.boots != 2 || res2.Key != res.Key {
		t.Fatalf("rebuild: %+v, boots %d", res2, r.boots)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("cached rebuild took %v", d)
	}
	if cat(t, out2, "/x") != "hi\n" {
		t.Error("cached result differs")
	}

	// A metadata-only change is still fully cached.
	req.Plan = plan(t, testDockerfile+"ENV MORE=1\nCMD [\"sh\"]\n")
	if res3, err := b.Build(context.Background(), req); err != nil || !res3.Cached {
		t.Fatalf("metadata change: %+v %v", res3, err)
	}

	// Changing a context file reruns the steps after the last cached RUN
	// (states are kept after RUN steps; WORKDIR and COPY are cheap).
	writeFiles(t, bctx, map[string]string{"a.txt": "changed\n"})
	req.Output = filepath.Join(t.TempDir(), "rootfs.ext4")
	res4, err := b.Build(context.Background(), req)
	if err != nil {
		t.Fatal(err)
	}
	var cached []bool
	for _, s := range res4.Steps {
		cached = append(cached, s.Cached)
	}
	if want := []bool{true, false, false, false, false}; !equalBools(cached, want) {
		t.Fatalf("cached steps = %v, want %v", cached, want)
	}
	if r.boots != 3 {
		t.Fatalf("boots %d, want 3", r.boots)
	}
	if got := cat(t, req.Output, "/copied"); got != "changed\n" {
		t.Errorf("/copied = %q", got)
	}
	if got := cat(t, req.Output, "/x"); got != "hi\n" {
		t.Errorf("cached step lost: /x = %q", got)
	}

	// NoCache runs everything again.
	req.NoCache = true
	req.Output = filepath.Join(t.TempDir(), "rootfs.ext4")
	res5, err := b.Build(context.Background(), req)
	if err != nil || res5.Cached || res5.Steps[0].Cached {
		t.Fatalf("no-cache: %+v %v", res5, err)
	}
	left, _ := os.ReadDir(filepath.Join(b.CacheDir, "tmp"))
	if len(left) != 0 {
		t.Errorf("scratch left: %v", left)
	}
}

func equalBools(a, b []bool) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func TestBuildFailingRun(t *testing.T) {
	requireE2fs(t)
	r := newChrootRunner(t)
	base := busyboxBaseDir(t)
	b := &Builder{CacheDir: t.TempDir(), Runner: r}
	out := filepath.Join(t.TempDir(), "rootfs.ext4")
	var log bytes.Buffer
	src := "FROM busybox\nRUN echo ok > /ok\nRUN echo about to fail && echo oops >&2 && exit 3\nRUN echo never > /never\n"
	_, err := b.Build(context.Background(), Request{Plan: plan(t, src), Context: t.TempDir(), Base: Base{Rootfs: base, Digest: "d"}, Output: out, Log: &log})
	var se *StepError
	if !errors.As(err, &se) {
		t.Fatalf("err = %v, want a StepError", err)
	}
	if se.Line != 3 || se.ExitCode != 3 || !strings.Contains(se.Output, "about to fail") || !strings.Contains(se.Output, "oops") {
		t.Fatalf("step error = %+v", se)
	}
	if !errors.Is(err, errkind.InvalidArgument) || !strings.Contains(err.Error(), "line 3") || !strings.Contains(err.Error(), "exit code 3") {
		t.Errorf("err = %v", err)
	}
	if _, err := os.Stat(out); !os.IsNotExist(err) {
		t.Error("output written by a failed build")
	}
	if r.running != 0 {
		t.Errorf("%d build machines left running", r.running)
	}
	if strings.Contains(log.String(), "never") && !strings.Contains(log.String(), "echo never") {
		t.Error("a step after the failure ran")
	}
	// The step before the failure is cached: fixing the failing step reruns only it.
	boots := r.boots
	src = "FROM busybox\nRUN echo ok > /ok\nRUN true\n"
	res, err := b.Build(context.Background(), Request{Plan: plan(t, src), Context: t.TempDir(), Base: Base{Rootfs: base, Digest: "d"}, Output: out})
	if err != nil {
		t.Fatal(err)
	}
	if !res.Steps[0].Cached || res.Steps[1].Cached || r.boots != boots+1 {
		t.Fatalf("steps %+v, boots %d (was %d)", res.Steps, r.boots, boots)
	}
}

func TestBuildContextErrors(t *testing.T) {
	r := newChrootRunner(t)
	bctx := t.TempDir()
	outside := t.TempDir()
	writeFiles(t, outside, map[string]string{"secret": "x"})
	writeFiles(t, bctx, map[string]string{"a": "a", "b": "b", ".dockerignore": "ignored\n", "ignored": "i"})
	if err := os.Symlink(filepath.Join(outside, "secret"), filepath.Join(bctx, "escape")); err != nil {
		t.Fatal(err)
	}
	b := &Builder{CacheDir: t.TempDir(), Runner: r}
	tests := map[string]string{
		"FROM busybox\nCOPY escape /x\n":  "line 2: COPY source \"escape\" is outside the build context",
		"FROM busybox\nCOPY missing /x\n": "line 2: COPY source \"missing\" not found",
		"FROM busybox\nADD *.nope /x/\n":  "line 2: ADD source \"*.nope\" matches no file",
		"FROM busybox\nCOPY a b /x\n":     "line 2: COPY with more than one source needs a destination directory",
		"FROM busybox\nCOPY ignored /x\n": "excluded by .dockerignore",
	}
	for src, want := range tests {
		_, err := b.Build(context.Background(), Request{Plan: plan(t, src), Context: bctx, Base: Base{Rootfs: "/nonexistent", Digest: "d"}, Output: filepath.Join(t.TempDir(), "o")})
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%q: err = %v, want %q", src, err, want)
		}
	}
	if r.boots != 0 {
		t.Errorf("context errors booted %d machines", r.boots)
	}
}

func TestBuildAddArchiveAndChmod(t *testing.T) {
	requireE2fs(t)
	r := newChrootRunner(t)
	base := busyboxBaseDir(t)
	bctx := t.TempDir()
	var tgz bytes.Buffer
	zw := gzip.NewWriter(&tgz)
	tw := tar.NewWriter(zw)
	tw.WriteHeader(&tar.Header{Name: "tool/", Typeflag: tar.TypeDir, Mode: 0o755})
	tw.WriteHeader(&tar.Header{Name: "tool/run.sh", Typeflag: tar.TypeReg, Mode: 0o755, Size: 10, Uid: 1000, Gid: 1000})
	tw.Write([]byte("echo tool\n"))
	tw.Close()
	zw.Close()
	writeFiles(t, bctx, map[string]string{"tool.tar.gz": tgz.String(), "script": "#!/bin/sh\n"})
	b := &Builder{CacheDir: t.TempDir(), Runner: r}
	out := filepath.Join(t.TempDir(), "rootfs.ext4")
	src := "FROM busybox\nADD tool.tar.gz /opt/\nCOPY --chmod=0700 script /usr/local/bin/script\nRUN /bin/sh /opt/tool/run.sh > /ran\n"
	if _, err := b.Build(context.Background(), Request{Plan: plan(t, src), Context: bctx, Base: Base{Rootfs: base, Digest: "d"}, Output: out}); err != nil {
		t.Fatal(err)
	}
	if got := cat(t, out, "/ran"); got != "tool\n" {
		t.Errorf("/ran = %q", got)
	}
	if st := stat(t, out, "/opt/tool/run.sh"); !strings.Contains(st, "User:  1000") {
		t.Errorf("archive owner not kept:\n%s", st)
	}
	if st := stat(t, out, "/usr/local/bin/script"); !strings.Contains(st, "Mode:  0700") {
		t.Errorf("--chmod not applied:\n%s", st)
	}
}

func TestBuildWithoutFilesystemSteps(t *testing.T) {
	b := &Builder{CacheDir: t.TempDir(), Runner: &chrootRunner{}}
	base := filepath.Join(t.TempDir(), "base.ext4")
	if err := os.WriteFile(base, []byte("pretend ext4"), 0o644); err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(t.TempDir(), "rootfs.ext4")
	res, err := b.Build(context.Background(), Request{Plan: plan(t, "FROM busybox\nENV A=1\n"), Base: Base{Rootfs: base, Digest: "d"}, Output: out})
	if err != nil || !res.Cached || len(res.Steps) != 0 {
		t.Fatalf("%+v %v", res, err)
	}
	if b, _ := os.ReadFile(out); string(b) != "pretend ext4" {
		t.Fatalf("output = %q", b)
	}
}

func TestBuildChangeInLaterStep(t *testing.T) {
	requireE2fs(t)
	r := newChrootRunner(t)
	base := busyboxBaseDir(t)
	b := &Builder{CacheDir: t.TempDir(), Runner: r}
	build := func(third string) *Result {
		t.Helper()
		src := "FROM busybox\nRUN echo 1 > /one\nRUN echo 2 > /two\nRUN " + third + "\n"
		out := filepath.Join(t.TempDir(), "rootfs.ext4")
		res, err := b.Build(context.Background(), Request{Plan: plan(t, src), Context: t.TempDir(), Base: Base{Rootfs: base, Digest: "d"}, Output: out})
		if err != nil {
			t.Fatal(err)
		}
		if cat(t, out, "/one") != "1\n" || cat(t, out, "/two") != "2\n" {
			t.Fatal("earlier steps' files missing")
		}
		return res
	}
	build("echo 3 > /three")
	boots := r.boots
	res := build("echo three > /three")
	var cached []bool
	for _, s := range res.Steps {
		cached = append(cached, s.Cached)
	}
	if want := []bool{true, true, false}; !equalBools(cached, want) || r.boots != boots+1 {
		t.Fatalf("cached = %v, boots %d (was %d)", cached, r.boots, boots)
	}
}

func TestBuildExportWithoutLs(t *testing.T) {
	requireE2fs(t)
	r := newChrootRunner(t)
	base := busyboxBaseDir(t)
	b := &Builder{CacheDir: t.TempDir(), Runner: r}
	df, err := dockerfile.Parse(strings.NewReader("FROM busybox\nRUN echo x > /x && rm -r /mnt\n"))
	if err != nil {
		t.Fatal(err)
	}
	p, err := df.Plan(dockerfile.Config{Env: []string{"PATH=/nowhere"}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(t.TempDir(), "rootfs.ext4")
	var log bytes.Buffer
	if _, err := b.Build(context.Background(), Request{Plan: p, Context: t.TempDir(), Base: Base{Rootfs: base, Digest: "d"}, Output: out, Log: &log}); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(log.String(), "reading the disks instead") || r.boots != 2 {
		t.Fatalf("fallback not taken (boots %d):\n%s", r.boots, log.String())
	}
	if cat(t, out, "/x") != "x\n" || stat(t, out, "/mnt") != "" || stat(t, out, "/bin/busybox") == "" {
		t.Fatal("export through the fallback is wrong")
	}
	fsck(t, out)
}
