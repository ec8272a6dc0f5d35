package workspace

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/bangerdev/banger/internal/errkind"
)

func requireGit(t *testing.T) {
	t.Helper()
	if _, err := exec.LookPath("git"); err != nil {
		t.Skip("git not installed")
	}
}

// git runs git in dir and returns its trimmed stdout.
func git(t *testing.T, dir string, args ...string) string {
	t.Helper()
	cmd := exec.Command("git", args...)
	cmd.Dir = dir
	cmd.Env = append(gitEnv(nil), "GIT_AUTHOR_NAME=t", "GIT_AUTHOR_EMAIL=t@t", "GIT_COMMITTER_NAME=t",
		"GIT_COMMITTER_EMAIL=t@t", "GIT_CONFIG_NOSYSTEM=1", "HOME="+t.TempDir())
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("git %v: %v\n%s", args, err, out)
	}
	return strings.TrimSpace(string(out))
}

func write(t *testing.T, p string, data string, mode os.FileMode) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, []byte(data), mode); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(p, mode); err != nil {
		t.Fatal(err)
	}
}

// fixtureRepo makes a repository with tracked files of several kinds, an
// ignored file and an untracked file.
func fixtureRepo(t *testing.T) string {
	t.Helper()
	requireGit(t)
	dir := filepath.Join(t.TempDir(), "repo")
	write(t, filepath.Join(dir, "tracked.txt"), "hello\n", 0o644)
	write(t, filepath.Join(dir, "run.sh"), "#!/bin/sh\necho run\n", 0o755)
	write(t, filepath.Join(dir, "secret.key"), "k", 0o600)
	write(t, filepath.Join(dir, "dir", "sub", "deep.txt"), "deep\n", 0o644)
	write(t, filepath.Join(dir, "bin.dat"), "\x00\x01\x02binary\xff", 0o644)
	write(t, filepath.Join(dir, ".gitignore"), "*.log\nbuild/\n", 0o644)
	if err := os.Symlink("tracked.txt", filepath.Join(dir, "link")); err != nil {
		t.Fatal(err)
	}
	git(t, dir, "init", "-q", "-b", "main")
	git(t, dir, "add", "-A")
	git(t, dir, "commit", "-q", "-m", "init")
	write(t, filepath.Join(dir, "debug.log"), "ignored\n", 0o644)
	write(t, filepath.Join(dir, "build", "out.o"), "ignored\n", 0o644)
	write(t, filepath.Join(dir, "notes.txt"), "untracked\n", 0o644)
	return dir
}

func filePaths(p *Plan) []string {
	var out []string
	for _, f := range p.Files {
		out = append(out, f.Path)
	}
	return out
}

func TestInspectGitTrackedAndUntracked(t *testing.T) {
	dir := fixtureRepo(t)
	ctx := context.Background()
	p, err := Inspect(ctx, dir, Options{})
	if err != nil {
		t.Fatal(err)
	}
	want := []string{".gitignore", "bin.dat", "dir/sub/deep.txt", "link", "run.sh", "secret.key", "tracked.txt"}
	if got := filePaths(p); !slices.Equal(got, want) {
		t.Fatalf("files = %v, want %v", got, want)
	}
	if p.Kind != KindGit || p.SkippedUntracked != 1 || p.GitDir != filepath.Join(p.Root, ".git") || p.GitBytes == 0 {
		t.Fatalf("plan = %+v", p)
	}
	if p.Head != git(t, dir, "rev-parse", "HEAD") {
		t.Fatalf("head %q", p.Head)
	}
	if !strings.Contains(p.Summary(), "1 untracked file left out") {
		t.Fatalf("summary %q", p.Summary())
	}

	p, err = Inspect(ctx, dir, Options{IncludeUntracked: true})
	if err != nil {
		t.Fatal(err)
	}
	want = append(want[:0:0], ".gitignore", "bin.dat", "dir/sub/deep.txt", "link", "notes.txt", "run.sh", "secret.key", "tracked.txt")
	if got := filePaths(p); !slices.Equal(got, want) {
		t.Fatalf("with untracked: files = %v, want %v", got, want)
	}

	// A deleted tracked file is left out and counted.
	if err := os.Remove(filepath.Join(dir, "bin.dat")); err != nil {
		t.Fatal(err)
	}
	p, err = Inspect(ctx, dir, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if p.MissingTracked != 1 || slices.Contains(filePaths(p), "bin.dat") {
		t.Fatalf("deleted file: %+v", p)
	}
}

func TestInspectSubdirPlainAndErrors(t *testing.T) {
	dir := fixtureRepo(t)
	ctx := context.Background()

	p, err := Inspect(ctx, filepath.Join(dir, "dir"), Options{})
	if err != nil {
		t.Fatal(err)
	}
	if got := filePaths(p); !slices.Equal(got, []string{"sub/deep.txt"}) || p.Prefix != "dir" || p.GitDir != "" || len(p.Notices) == 0 {
		t.Fatalf("subdir plan = %+v", p)
	}

	plain := t.TempDir()
	write(t, filepath.Join(plain, "a", "b.txt"), "b", 0o644)
	write(t, filepath.Join(plain, "c.log"), "c", 0o600)
	p, err = Inspect(ctx, plain, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if p.Kind != KindPlain || !slices.Equal(p.Paths(), []string{"a/", "a/b.txt", "c.log"}) || len(p.Notices) != 1 {
		t.Fatalf("plain plan = %+v %v", p, p.Paths())
	}

	if _, err := Inspect(ctx, filepath.Join(plain, "nope"), Options{}); !errors.Is(err, errkind.NotFound) {
		t.Fatalf("missing dir: %v", err)
	}
	if _, err := Inspect(ctx, filepath.Join(plain, "c.log"), Options{}); !errors.Is(err, errkind.InvalidArgument) {
		t.Fatalf("file: %v", err)
	}
	bare := filepath.Join(t.TempDir(), "bare.git")
	git(t, filepath.Dir(bare), "init", "-q", "--bare", bare)
	if _, err := Inspect(ctx, bare, Options{}); err == nil || !strings.Contains(err.Error(), "bare") {
		t.Fatalf("bare: %v", err)
	}
}

func TestInspectRefusesSubmodules(t *testing.T) {
	dir := fixtureRepo(t)
	head := git(t, dir, "rev-parse", "HEAD")
	// A gitlink entry is what `git submodule add` records.
	git(t, dir, "update-index", "--add", "--cacheinfo", "160000,"+head+",vendor/lib")
	git(t, dir, "commit", "-q", "-m", "submodule")
	_, err := Inspect(context.Background(), dir, Options{})
	if !errors.Is(err, errkind.InvalidArgument) || !strings.Contains(err.Error(), "submodules (vendor/lib)") ||
		!strings.Contains(errkind.Hint(err), "--mode full") {
		t.Fatalf("submodule: %v (hint %q)", err, errkind.Hint(err))
	}
	p, err := Inspect(context.Background(), dir, Options{Mode: ModeFull})
	if err != nil {
		t.Fatal(err)
	}
	got := filePaths(p)
	for _, want := range []string{"debug.log", "build/out.o", ".git/HEAD", "notes.txt"} {
		if !slices.Contains(got, want) {
			t.Fatalf("full mode lacks %s: %v", want, got)
		}
	}
}

// TestTarRoundTrip copies a plan through WriteTar and ExtractTar and checks
// modes, symlinks, contents and that the copy is a clean git work tree.
func TestTarRoundTrip(t *testing.T) {
	dir := fixtureRepo(t)
	ctx := context.Background()
	p, err := Inspect(ctx, dir, Options{})
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	var progress int64
	if err := WriteTar(ctx, &buf, p, TarOptions{Progress: func(n int64) { progress = n }}); err != nil {
		t.Fatal(err)
	}
	if progress != p.TotalBytes() {
		t.Fatalf("progress %d, plan %d", progress, p.TotalBytes())
	}
	dst := filepath.Join(t.TempDir(), "copy")
	res, err := ExtractTar(bytes.NewReader(buf.Bytes()), dst, ExtractOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if res.Bytes != p.TotalBytes() {
		t.Fatalf("extracted %d bytes, plan %d", res.Bytes, p.TotalBytes())
	}
	checkMode := func(name string, want os.FileMode) {
		t.Helper()
		fi, err := os.Lstat(filepath.Join(dst, name))
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode() != want {
			t.Fatalf("%s mode %v, want %v", name, fi.Mode(), want)
		}
	}
	checkMode("run.sh", 0o755)
	checkMode("secret.key", 0o600)
	checkMode("dir", fs.ModeDir|0o755)
	if l, err := os.Readlink(filepath.Join(dst, "link")); err != nil || l != "tracked.txt" {
		t.Fatalf("link: %q %v", l, err)
	}
	if b, _ := os.ReadFile(filepath.Join(dst, "bin.dat")); string(b) != "\x00\x01\x02binary\xff" {
		t.Fatalf("bin.dat = %q", b)
	}
	for _, absent := range []string{"debug.log", "build", "notes.txt"} {
		if _, err := os.Lstat(filepath.Join(dst, absent)); !errors.Is(err, fs.ErrNotExist) {
			t.Fatalf("%s copied: %v", absent, err)
		}
	}
	src, _ := os.Stat(filepath.Join(dir, "tracked.txt"))
	cp, _ := os.Stat(filepath.Join(dst, "tracked.txt"))
	if !src.ModTime().Truncate(time.Second).Equal(cp.ModTime()) { // tar keeps whole seconds
		t.Fatalf("mtime %v != %v", cp.ModTime(), src.ModTime())
	}
	if st := git(t, dst, "status", "--porcelain"); st != "" {
		t.Fatalf("copy is not a clean work tree:\n%s", st)
	}
	if git(t, dst, "rev-parse", "HEAD") != p.Head {
		t.Fatal("copy HEAD differs")
	}
}

func TestTarPathAndExtractRename(t *testing.T) {
	ctx := context.Background()
	src := t.TempDir()
	write(t, filepath.Join(src, "d", "f"), "f", 0o640)
	if err := os.Symlink("f", filepath.Join(src, "d", "l")); err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	if err := TarPath(ctx, &buf, filepath.Join(src, "d"), "renamed", TarOptions{}); err != nil {
		t.Fatal(err)
	}
	names := tarNames(t, buf.Bytes())
	if !slices.Equal(names, []string{"renamed/", "renamed/f", "renamed/l"}) {
		t.Fatalf("names %v", names)
	}
	dst := t.TempDir()
	if _, err := ExtractTar(bytes.NewReader(buf.Bytes()), dst, ExtractOptions{Map: func(n string) string {
		return strings.Replace(n, "renamed", "again", 1)
	}}); err != nil {
		t.Fatal(err)
	}
	if l, _ := os.Readlink(filepath.Join(dst, "again", "l")); l != "f" {
		t.Fatalf("link %q", l)
	}
	if fi, _ := os.Stat(filepath.Join(dst, "again", "f")); fi == nil || fi.Mode().Perm() != 0o640 {
		t.Fatalf("f: %v", fi)
	}
	buf.Reset()
	if err := TarPath(ctx, &buf, filepath.Join(src, "d", "f"), "one", TarOptions{}); err != nil {
		t.Fatal(err)
	}
	if names := tarNames(t, buf.Bytes()); !slices.Equal(names, []string{"one"}) {
		t.Fatalf("file names %v", names)
	}
}

func tarNames(t *testing.T, b []byte) []string {
	t.Helper()
	var names []string
	tr := tar.NewReader(bytes.NewReader(b))
	for {
		h, err := tr.Next()
		if err != nil {
			break
		}
		names = append(names, h.Name)
	}
	return names
}

func TestExtractTarStaysInside(t *testing.T) {
	outside := t.TempDir()
	mk := func(hdrs ...*tar.Header) []byte {
		var buf bytes.Buffer
		tw := tar.NewWriter(&buf)
		for _, h := range hdrs {
			if h.Typeflag == tar.TypeReg {
				h.Size = 1
			}
			if err := tw.WriteHeader(h); err != nil {
				t.Fatal(err)
			}
			if h.Typeflag == tar.TypeReg {
				tw.Write([]byte("x"))
			}
		}
		tw.Close()
		return buf.Bytes()
	}
	cases := map[string][]byte{
		"dotdot":  mk(&tar.Header{Name: "../escape", Typeflag: tar.TypeReg, Mode: 0o644}),
		"symlink": mk(&tar.Header{Name: "l", Typeflag: tar.TypeSymlink, Linkname: outside}, &tar.Header{Name: "l/escape", Typeflag: tar.TypeReg, Mode: 0o644}),
		"abslink": mk(&tar.Header{Name: "h", Typeflag: tar.TypeLink, Linkname: "../../etc/passwd"}),
	}
	for name, b := range cases {
		dst := t.TempDir()
		if _, err := ExtractTar(bytes.NewReader(b), dst, ExtractOptions{}); err == nil {
			t.Errorf("%s: extracted without error", name)
		}
		if _, err := os.Lstat(filepath.Join(outside, "escape")); err == nil {
			t.Fatalf("%s: wrote outside the destination", name)
		}
	}
}

func TestSnapshotAndExport(t *testing.T) {
	dir := fixtureRepo(t)
	ctx := context.Background()
	p, err := Inspect(ctx, dir, Options{})
	if err != nil {
		t.Fatal(err)
	}
	base, err := p.Snapshot(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if base != p.Head {
		t.Fatalf("clean tree snapshot %s != HEAD %s", base, p.Head)
	}

	// An uncommitted change makes a snapshot commit on top of HEAD without
	// touching the index or refs.
	write(t, filepath.Join(dir, "tracked.txt"), "hello, host edit\n", 0o644)
	refsBefore := git(t, dir, "show-ref")
	p, err = Inspect(ctx, dir, Options{})
	if err != nil {
		t.Fatal(err)
	}
	base, err = p.Snapshot(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if base == p.Head || git(t, dir, "rev-parse", base+"^") != p.Head {
		t.Fatalf("snapshot %s (head %s)", base, p.Head)
	}
	if git(t, dir, "diff", "--cached", "--name-only") != "" || git(t, dir, "show-ref") != refsBefore {
		t.Fatal("snapshot changed the index or refs")
	}
	if got := git(t, dir, "show", base+":tracked.txt"); got != "hello, host edit" {
		t.Fatalf("snapshot content %q", got)
	}

	// Copy, change things "in the guest", and export.
	var buf bytes.Buffer
	if err := WriteTar(ctx, &buf, p, TarOptions{}); err != nil {
		t.Fatal(err)
	}
	guest := filepath.Join(t.TempDir(), "repo")
	if _, err := ExtractTar(&buf, guest, ExtractOptions{}); err != nil {
		t.Fatal(err)
	}
	write(t, filepath.Join(guest, "tracked.txt"), "hello, host edit\nguest line\n", 0o644)
	write(t, filepath.Join(guest, "new.bin"), "\x00\xffnew binary\x00", 0o755)
	write(t, filepath.Join(guest, "out.log"), "ignored in guest\n", 0o644)
	if err := os.Remove(filepath.Join(guest, "secret.key")); err != nil {
		t.Fatal(err)
	}
	git(t, guest, "add", "-A")
	git(t, guest, "commit", "-q", "-m", "guest commit") // committed in the guest: still exported
	write(t, filepath.Join(guest, "dir", "sub", "deep.txt"), "deep, uncommitted\n", 0o644)

	buf.Reset()
	if err := TarPath(ctx, &buf, guest, "repo", TarOptions{}); err != nil {
		t.Fatal(err)
	}
	objsBefore := countFiles(t, filepath.Join(dir, ".git", "objects"))
	var patch bytes.Buffer
	if err := Export(ctx, &buf, ExportOptions{RepoRoot: dir, Base: base}, &patch); err != nil {
		t.Fatal(err)
	}
	if countFiles(t, filepath.Join(dir, ".git", "objects")) != objsBefore {
		t.Fatal("export wrote objects into the host repository")
	}
	ps := patch.String()
	for _, want := range []string{"+guest line", "GIT binary patch", "deleted file mode 100644", "deep, uncommitted", "new file mode 100755"} {
		if !strings.Contains(ps, want) {
			t.Fatalf("patch lacks %q:\n%s", want, ps)
		}
	}
	if strings.Contains(ps, "out.log") || strings.Contains(ps, ".git/") {
		t.Fatalf("patch carries ignored or git files:\n%s", ps)
	}
	pf := filepath.Join(t.TempDir(), "p.patch")
	if err := os.WriteFile(pf, patch.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	git(t, dir, "apply", "--check", pf)
	git(t, dir, "apply", pf)
	if b, _ := os.ReadFile(filepath.Join(dir, "new.bin")); string(b) != "\x00\xffnew binary\x00" {
		t.Fatalf("applied new.bin = %q", b)
	}

	// Bad base: a clear not-found error.
	buf.Reset()
	_ = TarPath(ctx, &buf, guest, "repo", TarOptions{})
	if err := Export(ctx, &buf, ExportOptions{RepoRoot: dir, Base: "no-such-ref"}, &patch); !errors.Is(err, errkind.NotFound) {
		t.Fatalf("bad base: %v", err)
	}
}

func TestExportSubdir(t *testing.T) {
	dir := fixtureRepo(t)
	ctx := context.Background()
	p, err := Inspect(ctx, filepath.Join(dir, "dir"), Options{})
	if err != nil {
		t.Fatal(err)
	}
	base, err := p.Snapshot(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	if err := WriteTar(ctx, &buf, p, TarOptions{}); err != nil {
		t.Fatal(err)
	}
	guest := filepath.Join(t.TempDir(), "repo")
	if _, err := ExtractTar(&buf, guest, ExtractOptions{}); err != nil {
		t.Fatal(err)
	}
	write(t, filepath.Join(guest, "sub", "deep.txt"), "changed\n", 0o644)
	buf.Reset()
	if err := TarPath(ctx, &buf, guest, "repo", TarOptions{}); err != nil {
		t.Fatal(err)
	}
	var patch bytes.Buffer
	if err := Export(ctx, &buf, ExportOptions{RepoRoot: p.RepoRoot, Prefix: p.Prefix, Base: base}, &patch); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(patch.String(), "a/dir/sub/deep.txt") || strings.Count(patch.String(), "diff --git") != 1 {
		t.Fatalf("subdir patch:\n%s", patch.String())
	}
	pf := filepath.Join(t.TempDir(), "p.patch")
	os.WriteFile(pf, patch.Bytes(), 0o644)
	git(t, dir, "apply", "--check", pf)
}

func countFiles(t *testing.T, dir string) int {
	t.Helper()
	n := 0
	filepath.WalkDir(dir, func(_ string, d fs.DirEntry, err error) error {
		if err == nil && !d.IsDir() {
			n++
		}
		return nil
	})
	return n
}
