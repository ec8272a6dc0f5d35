package main

import (
	"bufio"
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
)

// ensureRepo returns a committed git repository whose work tree holds
// about mb megabytes: half in small text-like files (0.5–16 KiB, nested
// directories, source-code-like so that git compresses them), half in
// four large binary files. It is generated once under cacheDir.
func ensureRepo(ctx context.Context, cacheDir string, mb int) (string, error) {
	repo := filepath.Join(cacheDir, fmt.Sprintf("repo-%dmb", mb))
	done := repo + ".ok"
	if _, err := os.Stat(done); err == nil {
		return repo, nil
	}
	logf("generating a %d MB repository in %s (once)", mb, repo)
	if err := os.RemoveAll(repo); err != nil {
		return "", err
	}
	rng := rand.New(rand.NewPCG(42, uint64(mb)))
	total := int64(mb) * 1e6
	small := total / 2
	words := strings.Fields("func return if else for range package import type struct interface map chan go defer select case default var const nil true false err ctx string int byte error len append make new copy close panic")
	var written int64
	for i := 0; written < small; i++ {
		dir := filepath.Join(repo, fmt.Sprintf("src%02d", i%64), fmt.Sprintf("pkg%02d", (i/64)%16))
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return "", err
		}
		size := 512 + rng.IntN(16<<10-512)
		var sb strings.Builder
		for sb.Len() < size {
			sb.WriteString(words[rng.IntN(len(words))])
			if rng.IntN(8) == 0 {
				sb.WriteString("\n\t")
			} else {
				sb.WriteByte(' ')
			}
		}
		mode := os.FileMode(0o644)
		if i%50 == 0 {
			mode = 0o755
		}
		if err := os.WriteFile(filepath.Join(dir, fmt.Sprintf("file%05d.go", i)), []byte(sb.String()), mode); err != nil {
			return "", err
		}
		written += int64(sb.Len())
	}
	large := (total - written) / 4
	for i := 0; i < 4; i++ {
		f, err := os.Create(filepath.Join(repo, fmt.Sprintf("asset%d.bin", i)))
		if err != nil {
			return "", err
		}
		w := bufio.NewWriterSize(f, 1<<20)
		buf := make([]byte, 1<<16)
		for n := int64(0); n < large; n += int64(len(buf)) {
			for j := 0; j+8 <= len(buf); j += 8 {
				v := rng.Uint64()
				for k := 0; k < 8; k++ {
					buf[j+k] = byte(v >> (8 * k))
				}
			}
			if _, err := w.Write(buf); err != nil {
				f.Close()
				return "", err
			}
		}
		if err := w.Flush(); err != nil {
			f.Close()
			return "", err
		}
		if err := f.Close(); err != nil {
			return "", err
		}
	}
	if err := os.WriteFile(filepath.Join(repo, ".gitignore"), []byte("*.o\n"), 0o644); err != nil {
		return "", err
	}
	for _, args := range [][]string{{"init", "-q", "-b", "main"}, {"add", "-A"}, {"commit", "-q", "-m", "bench"}, {"gc", "-q"}} {
		cmd := exec.CommandContext(ctx, "git", args...)
		cmd.Dir = repo
		cmd.Env = append(os.Environ(), "GIT_AUTHOR_NAME=b", "GIT_AUTHOR_EMAIL=b@b", "GIT_COMMITTER_NAME=b", "GIT_COMMITTER_EMAIL=b@b")
		if out, err := cmd.CombinedOutput(); err != nil {
			return "", fmt.Errorf("git %v: %v: %s", args, err, out)
		}
	}
	if err := os.WriteFile(done, nil, 0o644); err != nil {
		return "", err
	}
	return repo, nil
}
