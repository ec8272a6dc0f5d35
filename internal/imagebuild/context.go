package imagebuild

import (
	"archive/tar"
	"bufio"
	"bytes"
	"compress/bzip2"
	"compress/gzip"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"

	"github.com/klauspost/compress/zstd"
	"github.com/ulikunitz/xz"

	"github.com/bangerdev/banger/internal/dockerfile"
	"github.com/bangerdev/banger/internal/errkind"
)

// buildContext is the directory COPY and ADD read from, with its
// .dockerignore applied.
type buildContext struct {
	root   string // absolute, symlinks resolved
	ignore []ignorePattern
}

type ignorePattern struct {
	re     *regexp.Regexp
	negate bool
}

func openContext(dir string) (*buildContext, error) {
	abs, err := filepath.Abs(dir)
	if err != nil {
		return nil, err
	}
	root, err := filepath.EvalSymlinks(abs)
	if err != nil {
		return nil, errkind.New(errkind.InvalidArgument, "build context %s: %v", dir, err)
	}
	fi, err := os.Stat(root)
	if err != nil || !fi.IsDir() {
		return nil, errkind.New(errkind.InvalidArgument, "build context %s is not a directory", dir)
	}
	c := &buildContext{root: root}
	b, err := os.ReadFile(filepath.Join(root, ".dockerignore"))
	if err != nil && !os.IsNotExist(err) {
		return nil, fmt.Errorf("reading .dockerignore: %w", err)
	}
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		neg := strings.HasPrefix(line, "!")
		line = strings.TrimSpace(strings.TrimPrefix(line, "!"))
		p := strings.TrimPrefix(path.Clean("/"+line), "/")
		if p == "" {
			continue
		}
		re, err := globRegexp(p)
		if err != nil {
			return nil, errkind.New(errkind.InvalidArgument, ".dockerignore pattern %q: %v", line, err)
		}
		c.ignore = append(c.ignore, ignorePattern{re: re, negate: neg})
	}
	return c, nil
}

// globRegexp turns a .dockerignore pattern into a regexp: * and ? do not
// cross "/", ** does.
func globRegexp(p string) (*regexp.Regexp, error) {
	var b strings.Builder
	b.WriteString("^")
	for i := 0; i < len(p); i++ {
		c := p[i]
		switch {
		case c == '*' && i+1 < len(p) && p[i+1] == '*':
			i++
			if i+1 < len(p) && p[i+1] == '/' {
				i++
				b.WriteString("(.*/)?")
			} else {
				b.WriteString(".*")
			}
		case c == '*':
			b.WriteString("[^/]*")
		case c == '?':
			b.WriteString("[^/]")
		case c == '[':
			j := strings.IndexByte(p[i:], ']')
			if j < 0 {
				return nil, fmt.Errorf("unterminated [")
			}
			class := p[i+1 : i+j]
			if strings.HasPrefix(class, "!") {
				class = "^" + class[1:]
			}
			b.WriteString("[" + class + "]")
			i += j
		case c == '\\' && i+1 < len(p):
			i++
			b.WriteString(regexp.QuoteMeta(string(p[i])))
		default:
			b.WriteString(regexp.QuoteMeta(string(c)))
		}
	}
	b.WriteString("$")
	return regexp.Compile(b.String())
}

// ignored reports whether rel (slash-separated, relative to the root) is
// excluded: the last pattern matching it or one of its parents decides.
func (c *buildContext) ignored(rel string) bool {
	if rel == "." || rel == "" || len(c.ignore) == 0 {
		return false
	}
	out := false
	for _, p := range c.ignore {
		cand := rel
		for {
			if p.re.MatchString(cand) {
				out = !p.negate
				break
			}
			i := strings.LastIndexByte(cand, '/')
			if i < 0 {
				break
			}
			cand = cand[:i]
		}
	}
	return out
}

// source is a resolved COPY/ADD source.
type source struct {
	rel string // slash-separated, relative to the context root
	abs string // with symlinks of the source itself resolved
	fi  fs.FileInfo
}

// resolve expands and checks the sources of a COPY or ADD step: wildcards
// match in the context, every source (after following symlinks) stays
// inside it, and ignored files are not found.
func (c *buildContext) resolve(line int, kw string, cs *dockerfile.CopyStep) ([]source, error) {
	var out []source
	for _, pat := range cs.Sources {
		var rels []string
		if strings.ContainsAny(pat, "*?[") {
			matches, err := filepath.Glob(filepath.Join(c.root, filepath.FromSlash(pat)))
			if err != nil {
				return nil, stepErr(line, "%s source %q: %v", kw, pat, err)
			}
			for _, m := range matches {
				r, _ := filepath.Rel(c.root, m)
				if !c.ignored(filepath.ToSlash(r)) {
					rels = append(rels, filepath.ToSlash(r))
				}
			}
			if len(rels) == 0 {
				return nil, stepErr(line, "%s source %q matches no file in the build context", kw, pat)
			}
		} else {
			if c.ignored(pat) {
				return nil, stepErr(line, "%s source %q is excluded by .dockerignore", kw, pat)
			}
			rels = []string{pat}
		}
		for _, rel := range rels {
			p := filepath.Join(c.root, filepath.FromSlash(rel))
			real, err := filepath.EvalSymlinks(p)
			if err != nil {
				return nil, stepErr(line, "%s source %q not found in the build context", kw, rel)
			}
			if real != c.root && !strings.HasPrefix(real, c.root+string(filepath.Separator)) {
				return nil, stepErr(line, "%s source %q is outside the build context (it resolves to %s)", kw, rel, real)
			}
			fi, err := os.Stat(real)
			if err != nil {
				return nil, stepErr(line, "%s source %q: %v", kw, rel, err)
			}
			out = append(out, source{rel: rel, abs: real, fi: fi})
		}
	}
	if len(out) > 1 && !strings.HasSuffix(cs.Dest, "/") {
		return nil, stepErr(line, "%s with more than one source needs a destination directory ending in / (got %s)", kw, cs.Dest)
	}
	return out, nil
}

// putEntry is one file of a put: Name inside the put dir, read from Abs.
type putEntry struct {
	name string
	abs  string
	fi   fs.FileInfo
	link string
}

// put is one tar stream sent to one guest directory.
type put struct {
	dir     string
	entries []putEntry
	// archive, when set, is a local tar (maybe compressed) ADD extracts.
	archive string
}

// plan turns resolved sources into puts, following COPY's rules: a
// directory's contents go into the destination; a file goes into it when
// it ends in "/", else becomes it.
func (c *buildContext) plan(cs *dockerfile.CopyStep, srcs []source) ([]put, error) {
	destDir := strings.HasSuffix(cs.Dest, "/")
	dest := strings.TrimSuffix(cs.Dest, "/")
	if dest == "" {
		dest = "/"
	}
	var puts []put
	for _, s := range srcs {
		switch {
		case s.fi.IsDir():
			entries, err := c.walk(s)
			if err != nil {
				return nil, err
			}
			puts = append(puts, put{dir: dest, entries: entries})
		case cs.Add && isArchive(s.abs):
			// ADD extracts a local archive into the destination directory.
			puts = append(puts, put{dir: dest, archive: s.abs})
		case destDir:
			puts = append(puts, put{dir: dest, entries: []putEntry{{name: path.Base(s.rel), abs: s.abs, fi: s.fi}}})
		default:
			puts = append(puts, put{dir: path.Dir(dest), entries: []putEntry{{name: path.Base(dest), abs: s.abs, fi: s.fi}}})
		}
	}
	return puts, nil
}

// walk lists a directory source's contents (not the directory itself),
// sorted, skipping ignored paths, sockets and devices. Symlinks are kept
// as links.
func (c *buildContext) walk(s source) ([]putEntry, error) {
	var out []putEntry
	err := filepath.WalkDir(s.abs, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if p == s.abs {
			return nil
		}
		inner, _ := filepath.Rel(s.abs, p)
		inner = filepath.ToSlash(inner)
		if c.ignored(path.Join(s.rel, inner)) {
			if d.IsDir() {
				return filepath.SkipDir
			}
			return nil
		}
		fi, err := d.Info()
		if err != nil {
			return err
		}
		e := putEntry{name: inner, abs: p, fi: fi}
		switch {
		case fi.Mode()&fs.ModeSymlink != 0:
			if e.link, err = os.Readlink(p); err != nil {
				return err
			}
		case fi.IsDir(), fi.Mode().IsRegular():
		default:
			return nil
		}
		out = append(out, e)
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("reading %s: %w", s.rel, err)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].name < out[j].name })
	return out, nil
}

// hashPuts is the context-files part of a COPY step's cache key: names,
// types, modes, link targets and contents (not times or owners, as in
// Docker).
func hashPuts(puts []put) (string, error) {
	h := sha256.New()
	for _, p := range puts {
		fmt.Fprintf(h, "put %s\n", p.dir)
		if p.archive != "" {
			sum, err := fileSHA(p.archive)
			if err != nil {
				return "", err
			}
			fmt.Fprintf(h, "archive %s\n", sum)
			continue
		}
		for _, e := range p.entries {
			sum := ""
			if e.fi.Mode().IsRegular() {
				s, err := fileSHA(e.abs)
				if err != nil {
					return "", err
				}
				sum = s
			}
			fmt.Fprintf(h, "%q %o %q %s\n", e.name, e.fi.Mode(), e.link, sum)
		}
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

func fileSHA(p string) (string, error) {
	f, err := os.Open(p)
	if err != nil {
		return "", err
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return "", fmt.Errorf("reading %s: %w", p, err)
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

// writeTar writes the entries of a put as a tar stream; chmod >= 0
// replaces every entry's permission bits.
func (p put) writeTar(w io.Writer, chmod int64) error {
	if p.archive != "" {
		r, closeFn, err := openArchive(p.archive)
		if err != nil {
			return err
		}
		defer closeFn()
		_, err = io.Copy(w, r)
		return err
	}
	tw := tar.NewWriter(w)
	for _, e := range p.entries {
		hdr, err := tar.FileInfoHeader(e.fi, e.link)
		if err != nil {
			return err
		}
		hdr.Name = e.name
		if e.fi.IsDir() {
			hdr.Name += "/"
		}
		hdr.Uid, hdr.Gid, hdr.Uname, hdr.Gname = 0, 0, "", ""
		if chmod >= 0 && hdr.Typeflag != tar.TypeSymlink {
			hdr.Mode = chmod
		}
		if err := tw.WriteHeader(hdr); err != nil {
			return err
		}
		if hdr.Typeflag == tar.TypeReg {
			f, err := os.Open(e.abs)
			if err != nil {
				return err
			}
			_, err = io.CopyN(tw, f, hdr.Size)
			f.Close()
			if err != nil {
				return fmt.Errorf("reading %s: %w", e.abs, err)
			}
		}
	}
	return tw.Close()
}

// decompressor returns a reader of the decompressed content of r when its
// first bytes are a known compression magic.
func decompressor(br *bufio.Reader) (io.Reader, func(), error) {
	magic, _ := br.Peek(6)
	switch {
	case bytes.HasPrefix(magic, []byte{0x1f, 0x8b}):
		zr, err := gzip.NewReader(br)
		if err != nil {
			return nil, nil, err
		}
		return zr, func() { zr.Close() }, nil
	case bytes.HasPrefix(magic, []byte("BZh")):
		return bzip2.NewReader(br), func() {}, nil
	case bytes.HasPrefix(magic, []byte{0xfd, '7', 'z', 'X', 'Z', 0}):
		xr, err := xz.NewReader(br)
		if err != nil {
			return nil, nil, err
		}
		return xr, func() {}, nil
	case bytes.HasPrefix(magic, []byte{0x28, 0xb5, 0x2f, 0xfd}):
		zr, err := zstd.NewReader(br)
		if err != nil {
			return nil, nil, err
		}
		return zr, zr.Close, nil
	}
	return br, func() {}, nil
}

// openArchive opens a local tar archive (plain or compressed) for ADD.
func openArchive(p string) (io.Reader, func(), error) {
	f, err := os.Open(p)
	if err != nil {
		return nil, nil, err
	}
	r, closeFn, err := decompressor(bufio.NewReader(f))
	if err != nil {
		f.Close()
		return nil, nil, fmt.Errorf("reading archive %s: %w", p, err)
	}
	return r, func() { closeFn(); f.Close() }, nil
}

// isArchive reports whether p is a tar archive, possibly compressed with
// gzip, bzip2, xz or zstd (ADD extracts those).
func isArchive(p string) bool {
	r, closeFn, err := openArchive(p)
	if err != nil {
		return false
	}
	defer closeFn()
	hdr := make([]byte, 512)
	if _, err := io.ReadFull(r, hdr); err != nil {
		return false
	}
	return bytes.HasPrefix(hdr[257:], []byte("ustar"))
}

// resolveOwner turns a --chown value into ids, reading the image's
// /etc/passwd and /etc/group through the guest for names. Empty is 0:0;
// a user without group takes the user's primary group (or the same id).
func resolveOwner(ctx context.Context, g Guest, chown string) (int, int, error) {
	if chown == "" {
		return 0, 0, nil
	}
	user, group, hasGroup := strings.Cut(chown, ":")
	var passwd, groups map[string][2]int
	load := func(file string) (map[string][2]int, error) {
		var buf bytes.Buffer
		if err := g.GetTar(ctx, file, &buf); err != nil {
			if errors.Is(err, errkind.NotFound) {
				return map[string][2]int{}, nil
			}
			return nil, err
		}
		tr := tar.NewReader(&buf)
		if _, err := tr.Next(); err != nil {
			return nil, fmt.Errorf("reading %s: %w", file, err)
		}
		out := map[string][2]int{}
		sc := bufio.NewScanner(tr)
		for sc.Scan() {
			f := strings.Split(sc.Text(), ":")
			if len(f) < 3 {
				continue
			}
			id, err := strconv.Atoi(f[2])
			if err != nil {
				continue
			}
			gid := id
			if len(f) > 3 {
				if v, err := strconv.Atoi(f[3]); err == nil {
					gid = v
				}
			}
			out[f[0]] = [2]int{id, gid}
		}
		return out, nil
	}
	uid, gid := 0, 0
	if id, err := strconv.Atoi(user); err == nil {
		uid, gid = id, id
	} else {
		var err error
		if passwd, err = load("/etc/passwd"); err != nil {
			return 0, 0, err
		}
		e, ok := passwd[user]
		if !ok {
			return 0, 0, fmt.Errorf("no user %q in the image's /etc/passwd", user)
		}
		uid, gid = e[0], e[1]
	}
	if hasGroup {
		if id, err := strconv.Atoi(group); err == nil {
			gid = id
		} else {
			var err error
			if groups, err = load("/etc/group"); err != nil {
				return 0, 0, err
			}
			e, ok := groups[group]
			if !ok {
				return 0, 0, fmt.Errorf("no group %q in the image's /etc/group", group)
			}
			gid = e[0]
		}
	}
	return uid, gid, nil
}
