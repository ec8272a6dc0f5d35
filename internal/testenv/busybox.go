package testenv

import (
	"archive/tar"
	"bytes"
	"context"
	"debug/elf"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// BusyboxBinary is where Debian's busybox-static installs its binary.
const BusyboxBinary = "/bin/busybox"

// Properties of the busybox test image.
const (
	BusyboxRepoTag    = "busybox:latest"
	BusyboxPath       = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
	BusyboxHostname   = "busybox"
	BusyboxLabelKey   = "dev.banger.test.image"
	BusyboxLabelValue = "busybox"
	// BusyboxMarker is a file only this image has, with BusyboxMarkerText in it.
	BusyboxMarker     = "/root/.profile"
	BusyboxMarkerText = "# banger test image: busybox\nexport PS1='\\h:\\w\\$ '\n"
)

// BusyboxEpoch is the timestamp of every file and of the image config, so
// the image digest depends only on the busybox binary.
var BusyboxEpoch = time.Date(2024, 1, 1, 0, 0, 0, 0, time.UTC)

// skippedApplets are busybox applets not linked into the image: the guest
// agent is the init of banger guests, and a busybox init would compete.
var skippedApplets = []string{"busybox", "init", "linuxrc"}

// Entry is one file of a test image's root filesystem.
type Entry struct {
	Path   string // absolute, "/bin/sh"
	Type   byte   // tar.TypeDir, tar.TypeReg or tar.TypeSymlink
	Mode   int64  // permission bits with setuid/setgid/sticky, as in a tar header
	UID    int
	GID    int
	Target string // symlink target
	Data   []byte // regular file contents
}

// BusyboxEntries returns the root filesystem of the busybox image, parents
// before children: bin/busybox and one bin/ symlink per applet of
// `busybox --list` (except init and linuxrc), users root, nobody and dev
// (uid 1000), /tmp 1777, the /root/.profile marker, and sbin, usr/bin and
// usr/sbin as symlinks to bin. It skips the test when busybox-static is
// not installed (a failure under CI=true).
func BusyboxEntries(t testing.TB) []Entry {
	t.Helper()
	bin, applets, err := readBusybox(BusyboxBinary)
	if err != nil {
		if os.IsNotExist(err) {
			missing(t, true, "%s not found (Debian package busybox-static; run scripts/setup.sh)", BusyboxBinary)
		}
		t.Fatal(err)
	}
	return busyboxRootfs(bin, applets)
}

// BusyboxFiles returns the absolute paths of every entry of the busybox
// image (directories, files and symlinks), sorted, for checking a produced
// rootfs (for instance with debugfs).
func BusyboxFiles(t testing.TB) []string {
	t.Helper()
	entries := BusyboxEntries(t)
	paths := make([]string, 0, len(entries))
	for _, e := range entries {
		paths = append(paths, e.Path)
	}
	slices.Sort(paths)
	return paths
}

// BusyboxImage builds the busybox test image: one gzip layer holding
// BusyboxEntries, OCI media types, linux/amd64, PATH=BusyboxPath,
// Cmd ["/bin/sh"], WorkingDir "/" and the BusyboxLabelKey label. Building
// is deterministic: the same busybox binary gives the same digest.
func BusyboxImage(t testing.TB) v1.Image {
	t.Helper()
	img, err := ImageFromEntries(BusyboxEntries(t), v1.Config{
		Env:        []string{"PATH=" + BusyboxPath},
		Cmd:        []string{"/bin/sh"},
		WorkingDir: "/",
		Labels:     map[string]string{BusyboxLabelKey: BusyboxLabelValue},
	})
	if err != nil {
		t.Fatalf("building busybox image: %v", err)
	}
	return img
}

// PushBusybox pushes BusyboxImage to reg and returns its reference,
// "127.0.0.1:PORT/busybox:latest".
func PushBusybox(t testing.TB, reg *Registry) string {
	t.Helper()
	return PushImage(t, reg, BusyboxRepoTag, BusyboxImage(t))
}

// PushImage pushes img to reg as repoTag over plain HTTP and returns the
// full reference.
func PushImage(t testing.TB, reg *Registry, repoTag string, img v1.Image) string {
	t.Helper()
	ref := reg.Ref(repoTag)
	tag, err := name.NewTag(ref, name.Insecure)
	if err != nil {
		t.Fatalf("parsing %s: %v", ref, err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if err := remote.Write(tag, img, remote.WithContext(ctx)); err != nil {
		t.Fatalf("pushing %s: %v", ref, err)
	}
	return ref
}

// ImageFromEntries builds a single-layer linux/amd64 OCI image from entries
// with the given runtime config. Timestamps are BusyboxEpoch.
func ImageFromEntries(entries []Entry, cfg v1.Config) (v1.Image, error) {
	layerTar, err := TarEntries(entries)
	if err != nil {
		return nil, err
	}
	layer, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) {
		return io.NopCloser(bytes.NewReader(layerTar)), nil
	}, tarball.WithMediaType(types.OCILayer))
	if err != nil {
		return nil, fmt.Errorf("making layer: %w", err)
	}
	created := v1.Time{Time: BusyboxEpoch}
	base := mutate.MediaType(empty.Image, types.OCIManifestSchema1)
	base = mutate.ConfigMediaType(base, types.OCIConfigJSON)
	img, err := mutate.Append(base, mutate.Addendum{
		Layer:     layer,
		MediaType: types.OCILayer,
		History:   v1.History{Created: created, CreatedBy: "banger testenv", Comment: "root filesystem"},
	})
	if err != nil {
		return nil, fmt.Errorf("appending layer: %w", err)
	}
	cf, err := img.ConfigFile()
	if err != nil {
		return nil, fmt.Errorf("reading config: %w", err)
	}
	cf = cf.DeepCopy()
	cf.Architecture = "amd64"
	cf.OS = "linux"
	cf.Created = created
	cf.Config = cfg
	img, err = mutate.ConfigFile(img, cf)
	if err != nil {
		return nil, fmt.Errorf("setting config: %w", err)
	}
	return img, nil
}

// TarEntries writes entries as an uncompressed tar stream with numeric
// owners and BusyboxEpoch timestamps. Paths lose their leading slash;
// directories get a trailing one.
func TarEntries(entries []Entry) ([]byte, error) {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, e := range entries {
		hdr := &tar.Header{
			Typeflag: e.Type,
			Name:     strings.TrimPrefix(e.Path, "/"),
			Mode:     e.Mode,
			Uid:      e.UID,
			Gid:      e.GID,
			ModTime:  BusyboxEpoch,
			Format:   tar.FormatPAX,
		}
		switch e.Type {
		case tar.TypeDir:
			hdr.Name += "/"
		case tar.TypeReg:
			hdr.Size = int64(len(e.Data))
		case tar.TypeSymlink:
			hdr.Linkname = e.Target
		default:
			return nil, fmt.Errorf("writing %s: unsupported entry type %q", e.Path, e.Type)
		}
		if err := tw.WriteHeader(hdr); err != nil {
			return nil, fmt.Errorf("writing %s: %w", e.Path, err)
		}
		if e.Type == tar.TypeReg {
			if _, err := tw.Write(e.Data); err != nil {
				return nil, fmt.Errorf("writing %s: %w", e.Path, err)
			}
		}
	}
	if err := tw.Close(); err != nil {
		return nil, fmt.Errorf("closing tar: %w", err)
	}
	return buf.Bytes(), nil
}

// readBusybox reads a static busybox binary and its applet list.
func readBusybox(binPath string) ([]byte, []string, error) {
	bin, err := os.ReadFile(binPath)
	if err != nil {
		return nil, nil, err
	}
	f, err := elf.NewFile(bytes.NewReader(bin))
	if err != nil {
		return nil, nil, fmt.Errorf("reading %s: %w", binPath, err)
	}
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			return nil, nil, fmt.Errorf("%s is dynamically linked; install busybox-static", binPath)
		}
	}
	out, err := exec.Command(binPath, "--list").Output()
	if err != nil {
		return nil, nil, fmt.Errorf("listing busybox applets: %w", err)
	}
	var applets []string
	for _, a := range strings.Fields(string(out)) {
		if !slices.Contains(skippedApplets, a) && !strings.Contains(a, "/") {
			applets = append(applets, a)
		}
	}
	if len(applets) == 0 {
		return nil, nil, fmt.Errorf("listing busybox applets: %s lists none", binPath)
	}
	slices.Sort(applets)
	return bin, slices.Compact(applets), nil
}

// busyboxRootfs lays out the busybox root filesystem around bin.
func busyboxRootfs(bin []byte, applets []string) []Entry {
	dir := func(p string, mode int64, id int) Entry {
		return Entry{Path: p, Type: tar.TypeDir, Mode: mode, UID: id, GID: id}
	}
	file := func(p string, mode int64, data string) Entry {
		return Entry{Path: p, Type: tar.TypeReg, Mode: mode, Data: []byte(data)}
	}
	link := func(p, target string) Entry {
		return Entry{Path: p, Type: tar.TypeSymlink, Mode: 0o777, Target: target}
	}
	entries := []Entry{
		dir("/bin", 0o755, 0),
		{Path: "/bin/busybox", Type: tar.TypeReg, Mode: 0o755, Data: bin},
	}
	for _, a := range applets {
		entries = append(entries, link(path.Join("/bin", a), "busybox"))
	}
	entries = append(entries,
		dir("/dev", 0o755, 0),
		dir("/etc", 0o755, 0),
		file("/etc/passwd", 0o644, "root:x:0:0:root:/root:/bin/sh\n"+
			"nobody:x:65534:65534:nobody:/nonexistent:/bin/false\n"+
			"dev:x:1000:1000:dev:/home/dev:/bin/sh\n"),
		file("/etc/group", 0o644, "root:x:0:\nnobody:x:65534:\ndev:x:1000:dev\n"),
		file("/etc/hostname", 0o644, BusyboxHostname+"\n"),
		file("/etc/hosts", 0o644, "127.0.0.1\tlocalhost\n::1\tlocalhost\n"),
		file("/etc/os-release", 0o644, "NAME=\"banger busybox\"\nID=busybox\nPRETTY_NAME=\"banger busybox test image\"\n"),
		dir("/home", 0o755, 0),
		dir("/home/dev", 0o755, 1000),
		dir("/mnt", 0o755, 0),
		dir("/proc", 0o555, 0),
		dir("/root", 0o700, 0),
		file(BusyboxMarker, 0o644, BusyboxMarkerText),
		dir("/run", 0o755, 0),
		link("/sbin", "bin"),
		dir("/sys", 0o555, 0),
		dir("/tmp", 0o1777, 0),
		dir("/usr", 0o755, 0),
		link("/usr/bin", "../bin"),
		dir("/usr/local", 0o755, 0),
		dir("/usr/local/bin", 0o755, 0),
		link("/usr/sbin", "../bin"),
		dir("/var", 0o755, 0),
		dir("/var/log", 0o755, 0),
		dir("/var/tmp", 0o1777, 0),
	)
	return entries
}
