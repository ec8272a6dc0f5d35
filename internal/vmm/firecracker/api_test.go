package firecracker

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"
)

// exchange is one request/answer pair recorded from Firecracker v1.14.2
// (its API log and curl, on this project's lab host).
type exchange struct {
	method, path string
	body         string // request body ("" for none)
	status       int
	answer       string
}

var recorded = []exchange{
	{"GET", "/", "", 200, `{"id":"x1","state":"Not started","vmm_version":"1.14.2","app_name":"Firecracker"}`},
	{"GET", "/version", "", 200, `{"firecracker_version":"1.14.2"}`},
	{"PUT", "/machine-config", `{"vcpu_count":1,"mem_size_mib":256,"smt":false}`, 204, ""},
	{"PUT", "/boot-source", `{"kernel_image_path":"/k/vmlinux","initrd_path":"/k/initrd.img","boot_args":"console=ttyS0 reboot=k panic=-1"}`, 204, ""},
	{"PUT", "/drives/vda", `{"drive_id":"vda","path_on_host":"/nonexist","is_root_device":false,"is_read_only":true}`, 400,
		`{"fault_message":"Drive config error: Unable to create the virtio block device: Virtio backend error: Error manipulating the backing file: No such file or directory (os error 2) /nonexist"}`},
	{"PUT", "/drives/vdb", `{"drive_id":"vdb","path_on_host":"/d/vdb.img","is_root_device":false,"is_read_only":false,"cache_type":"Writeback"}`, 204, ""},
	{"PUT", "/network-interfaces/eth0", `{"iface_id":"eth0","host_dev_name":"tap0","guest_mac":"06:00:ac:1e:00:02"}`, 204, ""},
	{"PUT", "/vsock", `{"guest_cid":3,"uds_path":"/tmp/fcx/v.sock"}`, 204, ""},
	{"PUT", "/actions", `{"action_type":"InstanceStart"}`, 400,
		`{"fault_message":"Start microvm error: System configuration error: Cannot load kernel due to invalid memory configuration or invalid kernel image: Kernel Loader: failed to load ELF kernel image: Kernel Loader: Unable to read elf header"}`},
	{"GET", "/vm/config", "", 200,
		`{"balloon":null,"drives":[],"boot-source":{"kernel_image_path":"/etc/hostname","initrd_path":null,"boot_args":"console=ttyS0"},"cpu-config":null,"logger":null,"machine-config":{"vcpu_count":1,"mem_size_mib":256,"smt":false,"track_dirty_pages":false,"huge_pages":"None"},"metrics":null,"mmds-config":null,"network-interfaces":[],"vsock":{"guest_cid":3,"uds_path":"/tmp/fcx/v.sock"},"entropy":null,"pmem":[],"memory-hotplug":null}`},
	{"PUT", "/actions", `{"action_type":"SendCtrlAltDel"}`, 204, ""},
}

// replay serves the recorded exchange in order on a unix socket and fails
// the test on any request that differs from the recording.
func replay(t *testing.T, script []exchange) string {
	t.Helper()
	sock := filepath.Join(t.TempDir(), "api.sock")
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	next := 0
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if next >= len(script) {
			t.Errorf("unexpected request %s %s", r.Method, r.URL.Path)
			w.WriteHeader(500)
			return
		}
		want := script[next]
		next++
		body, _ := io.ReadAll(r.Body)
		if r.Method != want.method || r.URL.Path != want.path {
			t.Errorf("request %d: %s %s, want %s %s", next, r.Method, r.URL.Path, want.method, want.path)
		}
		if !jsonEqual(string(body), want.body) {
			t.Errorf("request %d %s: body %s, want %s", next, want.path, body, want.body)
		}
		if want.body != "" && r.Header.Get("Content-Type") != "application/json" {
			t.Errorf("request %d: content type %q", next, r.Header.Get("Content-Type"))
		}
		if want.answer != "" {
			w.Header().Set("Content-Type", "application/json")
		}
		w.WriteHeader(want.status)
		_, _ = io.WriteString(w, want.answer)
	})}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() {
		srv.Close()
		if next != len(script) {
			t.Errorf("%d of %d recorded requests made", next, len(script))
		}
	})
	return sock
}

func jsonEqual(a, b string) bool {
	if a == "" || b == "" {
		return a == b
	}
	var x, y any
	if json.Unmarshal([]byte(a), &x) != nil || json.Unmarshal([]byte(b), &y) != nil {
		return false
	}
	return reflect.DeepEqual(x, y)
}

func TestClientRecordedExchange(t *testing.T) {
	c := NewClient(replay(t, recorded))
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	info, err := c.InstanceInfo(ctx)
	if err != nil || info.State != "Not started" || info.VMMVersion != "1.14.2" || info.ID != "x1" {
		t.Errorf("instance info %+v, %v", info, err)
	}
	if v, err := c.Version(ctx); err != nil || v != "1.14.2" {
		t.Errorf("version %q, %v", v, err)
	}
	if err := c.PutMachineConfig(ctx, MachineConfig{VCPUCount: 1, MemSizeMiB: 256}); err != nil {
		t.Error(err)
	}
	if err := c.PutBootSource(ctx, BootSource{KernelImagePath: "/k/vmlinux", InitrdPath: "/k/initrd.img", BootArgs: "console=ttyS0 reboot=k panic=-1"}); err != nil {
		t.Error(err)
	}
	err = c.PutDrive(ctx, Drive{DriveID: "vda", PathOnHost: "/nonexist", IsReadOnly: true})
	var ae *APIError
	if !errors.As(err, &ae) || ae.Status != 400 || ae.Path != "/drives/vda" ||
		ae.FaultMessage != "Drive config error: Unable to create the virtio block device: Virtio backend error: Error manipulating the backing file: No such file or directory (os error 2) /nonexist" {
		t.Errorf("missing drive: %v", err)
	}
	if err := c.PutDrive(ctx, Drive{DriveID: "vdb", PathOnHost: "/d/vdb.img", CacheType: "Writeback"}); err != nil {
		t.Error(err)
	}
	if err := c.PutNetworkInterface(ctx, NetworkInterface{IfaceID: "eth0", HostDevName: "tap0", GuestMAC: "06:00:ac:1e:00:02"}); err != nil {
		t.Error(err)
	}
	if err := c.PutVsock(ctx, Vsock{GuestCID: 3, UDSPath: "/tmp/fcx/v.sock"}); err != nil {
		t.Error(err)
	}
	err = c.Action(ctx, ActionInstanceStart)
	d := New(Options{})
	if cerr := d.classify(err); cerr == nil || !errors.As(cerr, &ae) || ae.Status != 400 {
		t.Errorf("instance start with a bad kernel: %v", err)
	} else if got := cerr.Error(); !strings.Contains(got, "rejected the kernel") || !strings.Contains(got, "Unable to read elf header") {
		t.Errorf("classified error %q", got)
	}
	cfg, err := c.VMConfig(ctx)
	if err != nil || cfg.BootSource == nil || cfg.BootSource.KernelImagePath != "/etc/hostname" ||
		cfg.MachineConfig == nil || cfg.MachineConfig.MemSizeMiB != 256 || cfg.Vsock == nil || cfg.Vsock.UDSPath != "/tmp/fcx/v.sock" {
		t.Errorf("vm config %+v, %v", cfg, err)
	}
	if err := c.Action(ctx, ActionSendCtrlAltDel); err != nil {
		t.Error(err)
	}
}

func TestClientNoServer(t *testing.T) {
	c := NewClient(filepath.Join(t.TempDir(), "missing.sock"))
	_, err := c.InstanceInfo(context.Background())
	if err == nil || !strings.Contains(err.Error(), "missing.sock") {
		t.Errorf("error %v does not name the socket", err)
	}
}

func TestClientNonJSONFault(t *testing.T) {
	c := NewClient(replay(t, []exchange{{"PUT", "/actions", `{"action_type":"FlushMetrics"}`, 500, "internal trouble\n"}}))
	err := c.Action(context.Background(), ActionFlushMetrics)
	var ae *APIError
	if !errors.As(err, &ae) || ae.Status != 500 || ae.FaultMessage != "internal trouble" {
		t.Errorf("error %v", err)
	}
}
