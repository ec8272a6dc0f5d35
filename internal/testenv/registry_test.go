package testenv

import (
	"archive/tar"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"os/exec"
	"slices"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

func TestMain(m *testing.M) { Main(m) }

func TestRegistryPushPull(t *testing.T) {
	reg := StartRegistry(t)
	ref := PushBusybox(t, reg)
	if want := reg.Host + "/busybox:latest"; ref != want {
		t.Fatalf("PushBusybox = %q, want %q", ref, want)
	}

	tag, err := name.NewTag(ref, name.Insecure)
	if err != nil {
		t.Fatal(err)
	}
	img, err := remote.Image(tag, remote.WithContext(context.Background()))
	if err != nil {
		t.Fatalf("pulling %s: %v", ref, err)
	}
	local := BusyboxImage(t)
	gotDigest, err := img.Digest()
	if err != nil {
		t.Fatal(err)
	}
	wantDigest, err := local.Digest()
	if err != nil {
		t.Fatal(err)
	}
	if gotDigest != wantDigest {
		t.Errorf("pulled digest %s, built %s", gotDigest, wantDigest)
	}
	checkBusyboxImage(t, img)

	// The catalog lists the repository.
	var catalog struct{ Repositories []string }
	getJSON(t, reg.URL()+"/v2/_catalog", &catalog)
	if !slices.Contains(catalog.Repositories, "busybox") {
		t.Errorf("catalog = %v, want busybox in it", catalog.Repositories)
	}

	// Deletes are enabled in our config (the packaged default has them off).
	req, _ := http.NewRequest(http.MethodDelete, reg.URL()+"/v2/busybox/manifests/"+gotDigest.String(), nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusAccepted {
		t.Errorf("DELETE manifest: status %d, want 202", resp.StatusCode)
	}
	if _, err := remote.Image(tag); err == nil {
		t.Error("image still pullable after its manifest was deleted")
	}
}

// checkBusyboxImage checks the media types, config and layer contents of a
// busybox image against what BusyboxImage promises.
func checkBusyboxImage(t *testing.T, img v1.Image) {
	t.Helper()
	mt, err := img.MediaType()
	if err != nil {
		t.Fatal(err)
	}
	if mt != types.OCIManifestSchema1 {
		t.Errorf("manifest media type %s, want OCI", mt)
	}
	m, err := img.Manifest()
	if err != nil {
		t.Fatal(err)
	}
	if m.Config.MediaType != types.OCIConfigJSON {
		t.Errorf("config media type %s, want OCI", m.Config.MediaType)
	}
	cf, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	if cf.OS != "linux" || cf.Architecture != "amd64" {
		t.Errorf("platform %s/%s, want linux/amd64", cf.OS, cf.Architecture)
	}
	if !cf.Created.Time.Equal(BusyboxEpoch) {
		t.Errorf("created %s, want %s", cf.Created.Time, BusyboxEpoch)
	}
	if !slices.Equal(cf.Config.Env, []string{"PATH=" + BusyboxPath}) {
		t.Errorf("env %v", cf.Config.Env)
	}
	if !slices.Equal(cf.Config.Cmd, []string{"/bin/sh"}) {
		t.Errorf("cmd %v", cf.Config.Cmd)
	}
	if cf.Config.WorkingDir != "/" {
		t.Errorf("working dir %q", cf.Config.WorkingDir)
	}
	if cf.Config.Labels[BusyboxLabelKey] != BusyboxLabelValue {
		t.Errorf("labels %v", cf.Config.Labels)
	}

	layers, err := img.Layers()
	if err != nil {
		t.Fatal(err)
	}
	if len(layers) != 1 {
		t.Fatalf("%d layers, want 1", len(layers))
	}
	lmt, err := layers[0].MediaType()
	if err != nil {
		t.Fatal(err)
	}
	if lmt != types.OCILayer {
		t.Errorf("layer media type %s, want %s", lmt, types.OCILayer)
	}
	if len(cf.RootFS.DiffIDs) != 1 {
		t.Errorf("config has %d diff ids, want 1", len(cf.RootFS.DiffIDs))
	}
	rc, err := layers[0].Uncompressed()
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	checkLayer(t, rc, BusyboxEntries(t))
}

// checkLayer compares a layer tar stream with the entries it should hold.
func checkLayer(t *testing.T, r io.Reader, want []Entry) {
	t.Helper()
	tr := tar.NewReader(r)
	i := 0
	for ; ; i++ {
		hdr, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatalf("reading layer: %v", err)
		}
		if i >= len(want) {
			t.Fatalf("layer has extra entry %s", hdr.Name)
		}
		w := want[i]
		wantName := w.Path[1:]
		if w.Type == tar.TypeDir {
			wantName += "/"
		}
		if hdr.Name != wantName || hdr.Typeflag != w.Type || hdr.Mode != w.Mode ||
			hdr.Uid != w.UID || hdr.Gid != w.GID || hdr.Linkname != w.Target ||
			!hdr.ModTime.Equal(BusyboxEpoch) {
			t.Errorf("entry %d: %s type %c mode %o %d:%d -> %q at %s; want %s type %c mode %o %d:%d -> %q",
				i, hdr.Name, hdr.Typeflag, hdr.Mode, hdr.Uid, hdr.Gid, hdr.Linkname, hdr.ModTime,
				wantName, w.Type, w.Mode, w.UID, w.GID, w.Target)
		}
		data, err := io.ReadAll(tr)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(data, w.Data) {
			t.Errorf("%s: %d bytes differ from the expected %d", w.Path, len(data), len(w.Data))
		}
	}
	if i != len(want) {
		t.Errorf("layer has %d entries, want %d", i, len(want))
	}
}

func TestRegistrySkopeoInspect(t *testing.T) {
	skopeo := RequireBinary(t, "skopeo")
	reg := StartRegistry(t)
	ref := PushBusybox(t, reg)
	out, err := exec.Command(skopeo, "inspect", "--tls-verify=false", "docker://"+ref).Output()
	if err != nil {
		t.Fatalf("skopeo inspect: %v", err)
	}
	var info struct {
		Architecture string
		Os           string
		Labels       map[string]string
		Env          []string
	}
	if err := json.Unmarshal(out, &info); err != nil {
		t.Fatalf("decoding skopeo output: %v\n%s", err, out)
	}
	if info.Architecture != "amd64" || info.Os != "linux" || info.Labels[BusyboxLabelKey] != BusyboxLabelValue {
		t.Errorf("skopeo sees %+v", info)
	}
}

func TestRegistryCleanupStopsProcess(t *testing.T) {
	var pid int
	var host string
	t.Run("run", func(t *testing.T) {
		reg := StartRegistry(t)
		pid, host = reg.PID(), reg.Host
		getJSON(t, reg.URL()+"/v2/", &struct{}{})
	})
	if pid == 0 {
		t.Fatal("subtest did not start a registry")
	}
	if err := syscall.Kill(pid, 0); !errors.Is(err, syscall.ESRCH) {
		t.Errorf("registry pid %d still exists after cleanup (kill 0: %v)", pid, err)
	}
	if c, err := net.DialTimeout("tcp", host, time.Second); err == nil {
		c.Close()
		t.Errorf("%s still accepts connections after cleanup", host)
	}
}

func TestRegistriesAreIndependent(t *testing.T) {
	a, b := StartRegistry(t), StartRegistry(t)
	if a.Host == b.Host || a.Dir == b.Dir {
		t.Fatalf("registries share %s / %s", a.Host, a.Dir)
	}
	PushBusybox(t, a)
	var catalog struct{ Repositories []string }
	getJSON(t, b.URL()+"/v2/_catalog", &catalog)
	if len(catalog.Repositories) != 0 {
		t.Errorf("second registry lists %v, want nothing", catalog.Repositories)
	}
}

func getJSON(t *testing.T, url string, v any) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: status %d", url, resp.StatusCode)
	}
	if err := json.NewDecoder(resp.Body).Decode(v); err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
}
