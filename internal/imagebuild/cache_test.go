package imagebuild

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/bangerdev/banger/internal/errkind"
)

func TestStepKeys(t *testing.T) {
	base := BaseKey("sha256:aaa")
	if base != BaseKey("sha256:aaa") || base == BaseKey("sha256:bbb") {
		t.Fatal("base key not a function of the digest")
	}
	k := StepKey(base, `{"kind":"run"}`, "")
	if k != StepKey(base, `{"kind":"run"}`, "") {
		t.Fatal("step key not deterministic")
	}
	for _, other := range []string{
		StepKey(BaseKey("sha256:bbb"), `{"kind":"run"}`, ""), // another parent
		StepKey(base, `{"kind":"run "}`, ""),                 // another instruction
		StepKey(base, `{"kind":"run"}`, "ctx"),               // other context files
		StepKey(base, `{"kind":"run"}c`, ""),                 // no ambiguity from concatenation
	} {
		if other == k {
			t.Errorf("collision: %s", other)
		}
	}
	if len(k) != 64 || strings.Trim(k, "0123456789abcdef") != "" {
		t.Errorf("key %q is not hex sha256", k)
	}
}

// contextKey returns the cache key of "COPY src /dst/" against dir.
func contextKey(t *testing.T, dir string) string {
	t.Helper()
	p := plan(t, "FROM busybox\nCOPY src /dst/\n")
	b := &Builder{}
	steps, err := b.planSteps(Request{Plan: p, Context: dir, Base: Base{Digest: "d"}})
	if err != nil {
		t.Fatal(err)
	}
	return steps[0].key
}

func TestContextHash(t *testing.T) {
	dir := t.TempDir()
	writeFiles(t, dir, map[string]string{"src/a": "a", "src/sub/b": "b", "other": "not copied"})
	k := contextKey(t, dir)
	// Times and files outside the sources do not matter.
	old := time.Now().Add(-time.Hour)
	os.Chtimes(filepath.Join(dir, "src/a"), old, old)
	writeFiles(t, dir, map[string]string{"other": "changed"})
	if contextKey(t, dir) != k {
		t.Fatal("mtime or an unrelated file changed the key")
	}
	// Content, names and modes do.
	writeFiles(t, dir, map[string]string{"src/a": "A"})
	k2 := contextKey(t, dir)
	if k2 == k {
		t.Fatal("content change kept the key")
	}
	writeFiles(t, dir, map[string]string{"src/new": ""})
	k3 := contextKey(t, dir)
	if k3 == k2 {
		t.Fatal("new file kept the key")
	}
	os.Chmod(filepath.Join(dir, "src/new"), 0o755)
	if contextKey(t, dir) == k3 {
		t.Fatal("mode change kept the key")
	}
	// .dockerignore'd files do not count.
	k4 := contextKey(t, dir)
	writeFiles(t, dir, map[string]string{".dockerignore": "src/**/*.log\n", "src/sub/x.log": "noise"})
	k5 := contextKey(t, dir)
	writeFiles(t, dir, map[string]string{"src/sub/x.log": "more noise"})
	if contextKey(t, dir) != k5 || k5 != k4 {
		t.Fatal("ignored file changed the key")
	}
}

func TestIgnorePatterns(t *testing.T) {
	dir := t.TempDir()
	writeFiles(t, dir, map[string]string{".dockerignore": "# comment\n.git\n*.md\n!README.md\nbuild/**\n**/*.o\n/tmp?\n"})
	c, err := openContext(dir)
	if err != nil {
		t.Fatal(err)
	}
	for p, want := range map[string]bool{
		".git": true, ".git/config": true, "notes.md": true, "README.md": false, "docs/x.md": false,
		"build/out": true, "build": false, "src/a.o": true, "a.o": true, "tmp1": true, "tmp12": false, "main.go": false,
	} {
		if got := c.ignored(p); got != want {
			t.Errorf("ignored(%q) = %v, want %v", p, got, want)
		}
	}
}

func TestCopySparse(t *testing.T) {
	dir := t.TempDir()
	src := filepath.Join(dir, "src")
	f, _ := os.Create(src)
	f.WriteAt([]byte("head"), 0)
	f.WriteAt([]byte("tail"), 64<<20)
	f.Close()
	dst := filepath.Join(dir, "dst")
	if err := CopySparse(src, dst); err != nil {
		t.Fatal(err)
	}
	a, _ := os.ReadFile(src)
	b, _ := os.ReadFile(dst)
	if string(a) != string(b) {
		t.Fatal("content differs")
	}
	var st syscall.Stat_t
	if err := syscall.Stat(dst, &st); err != nil {
		t.Fatal(err)
	}
	if st.Blocks*512 > 1<<20 {
		t.Errorf("copy allocates %d bytes: holes filled", st.Blocks*512)
	}
}

func TestLockCacheSerialises(t *testing.T) {
	dir := t.TempDir()
	unlock, err := lockCache(context.Background(), dir, func() { t.Error("first lock waited") })
	if err != nil {
		t.Fatal(err)
	}
	waited := make(chan struct{}, 1)
	ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
	defer cancel()
	if _, err := lockCache(ctx, dir, func() { waited <- struct{}{} }); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("second lock while held: %v", err)
	}
	if len(waited) != 1 {
		t.Fatal("waiting not reported")
	}
	unlock()
	unlock2, err := lockCache(context.Background(), dir, func() { t.Error("waited after unlock") })
	if err != nil {
		t.Fatal(err)
	}
	unlock2()
}

func TestPrune(t *testing.T) {
	dir := t.TempDir()
	if freed, n, err := Prune(filepath.Join(dir, "missing"), false); err != nil || freed != 0 || n != 0 {
		t.Fatalf("missing cache: %d, %d, %v", freed, n, err)
	}
	for _, k := range []string{"a", "b"} {
		st := filepath.Join(dir, statesDir, k)
		if err := os.MkdirAll(st, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(st, stateFile), []byte("{}"), 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(st, overlayFile), bytes.Repeat([]byte{1}, 64<<10), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.MkdirAll(filepath.Join(dir, finalDir), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, finalDir, "b.ext4"), bytes.Repeat([]byte{1}, 64<<10), 0o644); err != nil {
		t.Fatal(err)
	}

	freed, n, err := Prune(dir, true)
	if err != nil || n != 2 || freed < 3*64<<10 {
		t.Fatalf("dry run: %d bytes, %d states, %v", freed, n, err)
	}
	if _, err := os.Stat(filepath.Join(dir, finalDir, "b.ext4")); err != nil {
		t.Fatal("dry run removed a file")
	}

	// A running build (holding the lock) makes prune refuse.
	unlock, err := lockCache(context.Background(), dir, func() {})
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := Prune(dir, false); !errors.Is(err, errkind.Conflict) {
		t.Fatalf("prune during a build: %v", err)
	}
	unlock()

	freed2, n2, err := Prune(dir, false)
	if err != nil || n2 != 2 || freed2 != freed {
		t.Fatalf("prune: %d bytes, %d states, %v (dry run said %d)", freed2, n2, err, freed)
	}
	left, _ := os.ReadDir(dir)
	if len(left) != 1 || left[0].Name() != ".lock" {
		t.Fatalf("left after prune: %v", left)
	}
}
