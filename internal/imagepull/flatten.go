package imagepull

import (
	"archive/tar"
	"bufio"
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"net/url"
	"path"
	"strings"
	"time"
)

// Stats summarises a flattened tree.
type Stats struct {
	// Entries is the number of tar entries written (placeholders included).
	Entries int64
	// Files, Dirs count regular files and directories written.
	Files, Dirs int64
	// Bytes is the sum of regular file sizes.
	Bytes int64
	// EstimatedSize is Σ round_up(size, 4 KiB) over regular files plus
	// 4 KiB per directory: close to `du` of the extracted tree.
	EstimatedSize int64
	// Whiteouts counts paths deleted by whiteouts and opaque directories.
	Whiteouts int64
}

const (
	whiteoutPrefix = ".wh."
	opaqueMarker   = ".wh..wh..opq"
	fsBlock        = 4096
)

// Per-path state of the flattener (bits).
const (
	fClaimed     uint8 = 1 << iota // an upper layer (or this one) decided the path
	fHides                         // non-directory or whiteout: hides everything below
	fOpaque                        // opaque directory: hides lower layers' children
	fDir                           // a directory entry has been written
	fPlaceholder                   // written as a placeholder parent only
	fFile                          // a non-directory entry has been written
)

// Flatten writes the union of layers (ordered bottom to top, as in a
// manifest) to tw in one streaming pass over each layer, top layer first:
//
//   - whiteouts (.wh.NAME) delete NAME from lower layers, and opaque markers
//     (.wh..wh..opq) hide a directory's lower contents;
//   - each path is written once, with its topmost entry;
//   - missing parent directories are written first as 0755 root-owned
//     placeholders, and the real entry, arriving later from a lower layer,
//     updates their metadata (ext4.FromTar and mke2fs both allow that);
//   - hardlink entries carry their target's mode, owner and mtime, and a
//     hardlink whose target an upper layer deleted gets the target's content
//     (the layer is read again, which is rare);
//   - entries with ".." components, and symlinks or hardlinks that would
//     escape the root, are rejected with an error naming the layer and path.
//
// Flatten does not close tw.
func Flatten(ctx context.Context, layers []Source, tw *tar.Writer) (Stats, error) {
	f := &flattener{tw: tw, state: make(map[string]uint8, 4096)}
	for i := len(layers) - 1; i >= 0; i-- {
		if err := f.layer(ctx, i, layers[i]); err != nil {
			return f.stats, err
		}
	}
	if err := f.resolveDeferred(ctx, layers); err != nil {
		return f.stats, err
	}
	return f.stats, nil
}

type linkMeta struct {
	mode     int64
	uid, gid int
	mtime    time.Time
	typ      byte
}

type deferredLink struct {
	layer        int
	name, target string
	hdr          *tar.Header
	targetHidden bool
}

type flattener struct {
	tw       *tar.Writer
	buf      []byte // reused for copying file data
	state    map[string]uint8
	stats    Stats
	deferred []deferredLink
	rootDone bool
}

func (f *flattener) layer(ctx context.Context, idx int, src Source) error {
	rc, err := src.Open()
	if err != nil {
		return fmt.Errorf("layer %s: %w", src.Digest, err)
	}
	defer rc.Close()
	// Headers are read 512 bytes at a time: buffer them, the source may be
	// a pipe or a file.
	tr := tar.NewReader(bufio.NewReaderSize(rc, 256<<10))
	var whiteouts, opaques []string
	hiddenFiles := map[string]bool{}
	files := map[string]linkMeta{}
	for n := 0; ; n++ {
		if n%256 == 0 && ctx.Err() != nil {
			return ctx.Err()
		}
		hdr, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			return fmt.Errorf("layer %s: reading tar: %w", src.Digest, err)
		}
		name, err := cleanName(hdr.Name)
		if err != nil {
			return fmt.Errorf("layer %s: entry %q: %w", src.Digest, hdr.Name, err)
		}
		dir, base := path.Split(name)
		dir = strings.TrimSuffix(dir, "/")
		if dir == "" {
			dir = "."
		}
		if base == opaqueMarker {
			opaques = append(opaques, dir)
			continue
		}
		if strings.HasPrefix(base, whiteoutPrefix) {
			t := base[len(whiteoutPrefix):]
			if t == "" || t == "." || t == ".." {
				return fmt.Errorf("layer %s: entry %q: invalid whiteout", src.Digest, hdr.Name)
			}
			whiteouts = append(whiteouts, path.Join(dir, t))
			continue
		}
		switch hdr.Typeflag {
		case tar.TypeReg, tar.TypeDir, tar.TypeSymlink, tar.TypeLink, tar.TypeChar, tar.TypeBlock, tar.TypeFifo:
		case tar.TypeGNUSparse:
			hdr.Typeflag = tar.TypeReg
		default:
			continue // volume labels, GNU dump dirs, …: nothing to write
		}
		isDir := hdr.Typeflag == tar.TypeDir
		if name == "." {
			if isDir && !f.rootDone {
				f.rootDone = true
				if err := f.emit(hdr, "./", tr); err != nil {
					return fmt.Errorf("layer %s: %w", src.Digest, err)
				}
			}
			continue
		}
		st := f.state[name]
		if st&fClaimed != 0 || f.hidden(name) || (st&fPlaceholder != 0 && !isDir) {
			if !isDir {
				hiddenFiles[name] = true
			}
			continue
		}
		if isDir {
			f.state[name] = (st | fClaimed | fDir) &^ fPlaceholder
		} else {
			f.state[name] = st | fClaimed | fHides
		}

		switch hdr.Typeflag {
		case tar.TypeLink:
			target, err := cleanName(hdr.Linkname)
			if err != nil || target == "." {
				return fmt.Errorf("layer %s: hardlink %q -> %q escapes the root or is invalid", src.Digest, name, hdr.Linkname)
			}
			meta, ok := files[target]
			if !ok {
				h := *hdr
				f.deferred = append(f.deferred, deferredLink{layer: idx, name: name, target: target, hdr: &h, targetHidden: hiddenFiles[target]})
				continue
			}
			hdr.Linkname = target
			applyMeta(hdr, meta)
		case tar.TypeSymlink:
			if escapes(dir, hdr.Linkname) {
				return fmt.Errorf("layer %s: symlink %q -> %q escapes the root", src.Digest, name, hdr.Linkname)
			}
		}
		if err := f.ensureParents(name); err != nil {
			return fmt.Errorf("layer %s: %w", src.Digest, err)
		}
		if err := f.emit(hdr, name, tr); err != nil {
			return fmt.Errorf("layer %s: %w", src.Digest, err)
		}
		if isDir && st&fPlaceholder != 0 {
			// Counted when the placeholder was written.
			f.stats.Dirs--
			f.stats.EstimatedSize -= fsBlock
		}
		if !isDir {
			f.state[name] |= fFile
			files[name] = linkMeta{mode: hdr.Mode, uid: hdr.Uid, gid: hdr.Gid, mtime: hdr.ModTime, typ: hdr.Typeflag}
		}
	}
	// Whiteouts and opaque markers apply to lower layers only.
	for _, w := range whiteouts {
		if f.state[w]&fClaimed == 0 && !f.hidden(w) {
			f.state[w] |= fClaimed | fHides
			f.stats.Whiteouts++
		}
	}
	for _, d := range opaques {
		f.state[d] |= fOpaque
		f.stats.Whiteouts++
	}
	return nil
}

// hidden reports whether an ancestor of name hides it from this layer.
func (f *flattener) hidden(name string) bool {
	for p := name; ; {
		i := strings.LastIndexByte(p, '/')
		if i < 0 {
			return f.state["."]&fOpaque != 0
		}
		p = p[:i]
		if f.state[p]&(fHides|fOpaque) != 0 {
			return true
		}
	}
}

// ensureParents writes placeholder directories for missing ancestors.
func (f *flattener) ensureParents(name string) error {
	for i := 0; i < len(name); i++ {
		if name[i] != '/' {
			continue
		}
		p := name[:i]
		if f.state[p]&fDir != 0 {
			continue
		}
		if f.state[p]&fFile != 0 {
			return fmt.Errorf("%q: parent %q is not a directory", name, p)
		}
		f.state[p] |= fDir | fPlaceholder
		h := &tar.Header{Typeflag: tar.TypeDir, Name: p + "/", Mode: 0o755, ModTime: time.Unix(0, 0), Format: tar.FormatPAX}
		if err := f.tw.WriteHeader(h); err != nil {
			return fmt.Errorf("writing %s: %w", p, err)
		}
		f.stats.Entries++
		f.stats.Dirs++
		f.stats.EstimatedSize += fsBlock
	}
	return nil
}

// emit writes hdr under name, copying the data of regular files from r.
func (f *flattener) emit(hdr *tar.Header, name string, r io.Reader) error {
	out := &tar.Header{
		Typeflag: hdr.Typeflag,
		Name:     name,
		Linkname: hdr.Linkname,
		Mode:     hdr.Mode & 0o7777,
		Uid:      hdr.Uid,
		Gid:      hdr.Gid,
		ModTime:  hdr.ModTime,
		Devmajor: hdr.Devmajor,
		Devminor: hdr.Devminor,
		Format:   tar.FormatPAX,
	}
	if x := xattrRecords(hdr); len(x) > 0 {
		out.PAXRecords = x
	}
	switch hdr.Typeflag {
	case tar.TypeReg:
		out.Size = hdr.Size
	case tar.TypeDir:
		if !strings.HasSuffix(out.Name, "/") {
			out.Name += "/"
		}
	}
	if hdr.Typeflag != tar.TypeChar && hdr.Typeflag != tar.TypeBlock {
		out.Devmajor, out.Devminor = 0, 0
	}
	if err := f.tw.WriteHeader(out); err != nil {
		return fmt.Errorf("writing %s: %w", name, err)
	}
	if out.Size > 0 {
		if f.buf == nil {
			f.buf = make([]byte, 256<<10)
		}
		if _, err := io.CopyBuffer(f.tw, onlyReader{r}, f.buf); err != nil {
			return fmt.Errorf("copying %s: %w", name, err)
		}
	}
	f.stats.Entries++
	switch hdr.Typeflag {
	case tar.TypeReg:
		f.stats.Files++
		f.stats.Bytes += out.Size
		f.stats.EstimatedSize += (out.Size + fsBlock - 1) &^ (fsBlock - 1)
	case tar.TypeDir:
		f.stats.Dirs++
		f.stats.EstimatedSize += fsBlock
	}
	return nil
}

// onlyReader hides WriterTo so that io.CopyBuffer uses the shared buffer.
type onlyReader struct{ io.Reader }

func applyMeta(hdr *tar.Header, m linkMeta) {
	hdr.Mode, hdr.Uid, hdr.Gid, hdr.ModTime = m.mode, m.uid, m.gid, m.mtime
}

// xattrRecords keeps the extended attributes of an entry as SCHILY.xattr
// PAX records (converting libarchive's encoding).
func xattrRecords(hdr *tar.Header) map[string]string {
	var out map[string]string
	for k, v := range hdr.PAXRecords {
		switch {
		case strings.HasPrefix(k, "SCHILY.xattr."):
		case strings.HasPrefix(k, "LIBARCHIVE.xattr."):
			n, err := url.PathUnescape(k[len("LIBARCHIVE.xattr."):])
			val, err2 := base64.StdEncoding.DecodeString(v)
			if err != nil || err2 != nil {
				continue
			}
			k, v = "SCHILY.xattr."+n, string(val)
		default:
			continue
		}
		if out == nil {
			out = map[string]string{}
		}
		out[k] = v
	}
	return out
}

var errDotDot = errors.New(`".." path component`)

// cleanName normalises a tar entry or hardlink name to a relative path
// ("." for the root), rejecting ".." components.
func cleanName(n string) (string, error) {
	for _, c := range strings.Split(n, "/") {
		if c == ".." {
			return "", errDotDot
		}
	}
	c := path.Clean("/" + n)
	if c == "/" {
		return ".", nil
	}
	return c[1:], nil
}

// escapes reports whether a relative symlink in dir climbs above the root.
// Absolute targets resolve inside the guest's root and are fine.
func escapes(dir, target string) bool {
	if strings.HasPrefix(target, "/") {
		return false
	}
	depth := 0
	if dir != "." {
		depth = strings.Count(dir, "/") + 1
	}
	for _, c := range strings.Split(target, "/") {
		switch c {
		case "", ".":
		case "..":
			depth--
			if depth < 0 {
				return true
			}
		default:
			depth++
		}
	}
	return false
}
