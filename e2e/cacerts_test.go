package e2e

import (
	"bytes"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/bangerdev/banger/internal/testenv"
)

// caImage returns a Debian bookworm minbase ext4 with ca-certificates
// (and so openssl), built with debootstrap on first use and cached.
func caImage(t *testing.T) string {
	return testenv.BuildDebianImage(t, testenv.DebianImage{
		File: "e2e-bookworm-cacerts.ext4", Label: "bookworm-ca",
		Include: []string{"ca-certificates"},
	})
}

// TestGuestCACerts configures guest_ca_certs and checks, offline with
// openssl in the guest, that leaf certificates signed by the configured
// CAs verify against the guest's trust store (the bundle and the hashed
// directory) after a start, did not before, and that restarts neither
// re-run update-ca-certificates nor add a certificate twice, including
// on the fallback path that appends to the bundle.
func TestGuestCACerts(t *testing.T) {
	img := caImage(t)
	e := newBareVMEnv(t)
	e.importKernel(t)
	e.must("image", "register", "--name", "deb-ca", "--rootfs", img, "--kernel-ref", "cloud")

	// corp.crt holds one CA; extra.pem two (leaves are signed by the second).
	dir := t.TempDir()
	corp, other, extra := testenv.NewCA(t, "banger e2e corp CA"), testenv.NewCA(t, "banger e2e other CA"), testenv.NewCA(t, "banger e2e extra CA")
	corpFile, extraFile := filepath.Join(dir, "corp.crt"), filepath.Join(dir, "extra.pem")
	leafCorp, leafExtra := filepath.Join(dir, "leaf-corp.pem"), filepath.Join(dir, "leaf-extra.pem")
	for p, data := range map[string][]byte{
		corpFile:  corp.PEM,
		extraFile: append(append([]byte("# two roots\n"), other.PEM...), extra.PEM...),
		leafCorp:  corp.Leaf(t, "proxy.corp.example"),
		leafExtra: extra.Leaf(t, "git.extra.example"),
	} {
		if err := os.WriteFile(p, data, 0o644); err != nil {
			t.Fatal(err)
		}
	}

	const vm = "ca1"
	t0 := time.Now()
	e.must("vm", "create", "--name", vm, "--image", "deb-ca", "--memory", vmMemory, "--net", "none")
	t.Cleanup(func() { e.run("vm", "delete", "-f", vm) })
	t.Logf("vm create without guest_ca_certs: %v", time.Since(t0).Round(time.Millisecond))
	e.must("vm", "cp", leafCorp, vm+":/root/")
	e.must("vm", "cp", leafExtra, vm+":/root/")

	const bundle = "/etc/ssl/certs/ca-certificates.crt"
	verify := func(t *testing.T, leaf string, wantOK bool) {
		t.Helper()
		for _, how := range [][]string{{"-CAfile", bundle}, {"-CApath", "/etc/ssl/certs"}} {
			args := append(append([]string{"vm", "exec", vm, "--", "openssl", "verify"}, how...), "/root/"+leaf)
			r := e.run(args...)
			ok := r.code == 0 && strings.Contains(r.stdout, ": OK")
			if ok != wantOK {
				t.Fatalf("openssl verify %s %s: ok=%v, want %v: %+v\ndaemon log:\n%s", how[0], leaf, ok, wantOK, r, e.daemonLog())
			}
			if !wantOK && !strings.Contains(r.stdout+r.stderr, "unable to get local issuer certificate") {
				t.Fatalf("openssl verify %s %s failed for another reason: %+v", how[0], leaf, r)
			}
		}
	}
	// count is how many times ca's certificate is in the guest's bundle.
	count := func(ca *testenv.CA) int {
		return bytes.Count([]byte(e.guest(vm, "cat", bundle)), bytes.TrimSpace(ca.PEM))
	}
	restart := func(t *testing.T, what string) {
		t.Helper()
		t0 := time.Now()
		e.must("vm", "stop", vm)
		t1 := time.Now()
		e.must("vm", "start", vm)
		t.Logf("%s: vm stop %v, vm start %v", what, t1.Sub(t0).Round(time.Millisecond), time.Since(t1).Round(time.Millisecond))
	}

	e.sub(t, "untrusted-without-config", func(t *testing.T) {
		verify(t, "leaf-corp.pem", false)
		verify(t, "leaf-extra.pem", false)
		if r := e.run("vm", "exec", vm, "--", "ls", "/usr/local/share/ca-certificates/banger"); r.code == 0 {
			t.Fatalf("banger CA dir exists without guest_ca_certs: %+v", r)
		}
		// Kept to put the guest back in this state for the fallback test.
		e.guest(vm, "cp", bundle, "/root/bundle.orig")
	})

	// The daemon reads its config at start: stop the VM and the daemon,
	// configure, and let the next command start a daemon that has it.
	e.must("vm", "stop", vm)
	e.stopDaemon()
	cfg := filepath.Join(e.home, "config", "config.toml")
	conf := "guest_ca_certs = [\"" + corpFile + "\", \"" + extraFile + "\"]\n[network]\ndisabled = true\n"
	if err := os.WriteFile(cfg, []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}

	e.sub(t, "trusted-after-start", func(t *testing.T) {
		t0 := time.Now()
		e.must("vm", "start", vm)
		t.Logf("first vm start with guest_ca_certs (update-ca-certificates runs): %v", time.Since(t0).Round(time.Millisecond))
		verify(t, "leaf-corp.pem", true)
		verify(t, "leaf-extra.pem", true)
		files := strings.Fields(e.guest(vm, "ls", "/usr/local/share/ca-certificates/banger"))
		if want := []string{"corp.crt", "extra-1.crt", "extra-2.crt"}; !slices.Equal(files, want) {
			t.Fatalf("guest CA files %q, want %q", files, want)
		}
		if n := count(corp); n != 1 {
			t.Fatalf("corp CA %d times in the bundle", n)
		}
		if !strings.Contains(e.daemonLog(), "status=updated") {
			t.Fatalf("daemon log lacks the install:\n%s", e.daemonLog())
		}
	})

	e.sub(t, "restart-is-idempotent", func(t *testing.T) {
		restart(t, "restart, certificates unchanged")
		if !strings.Contains(e.daemonLog(), "status=unchanged") {
			t.Fatalf("restart re-ran update-ca-certificates:\n%s", e.daemonLog())
		}
		if n, m := count(corp), count(extra); n != 1 || m != 1 {
			t.Fatalf("after restart: corp CA %d times, extra CA %d times in the bundle", n, m)
		}
		verify(t, "leaf-corp.pem", true)
	})

	e.sub(t, "fallback-appends-once", func(t *testing.T) {
		// A guest without update-ca-certificates: drop banger's files and
		// put the bundle of before back (the hashed links left dangle),
		// then hide the tool.
		e.guest(vm, "sh", "-c", "rm -r /usr/local/share/ca-certificates/banger && cp /root/bundle.orig "+bundle+" && "+
			"mv /usr/sbin/update-ca-certificates /root/update-ca-certificates.off")
		verify(t, "leaf-corp.pem", false)
		restart(t, "restart, no update-ca-certificates")
		if !strings.Contains(e.daemonLog(), "appended 3 to "+bundle) {
			t.Fatalf("no append in the daemon log:\n%s", e.daemonLog())
		}
		if n, m := count(corp), count(extra); n != 1 || m != 1 {
			t.Fatalf("after append: corp CA %d times, extra CA %d times in the bundle", n, m)
		}
		verify2 := func() {
			r := e.run("vm", "exec", vm, "--", "openssl", "verify", "-CAfile", bundle, "/root/leaf-corp.pem", "/root/leaf-extra.pem")
			if r.code != 0 || strings.Count(r.stdout, ": OK") != 2 {
				t.Fatalf("openssl verify against the appended bundle: %+v", r)
			}
		}
		verify2()
		restart(t, "restart, no update-ca-certificates, already appended")
		if n, m := count(corp), count(extra); n != 1 || m != 1 {
			t.Fatalf("after second restart: corp CA %d times, extra CA %d times in the bundle", n, m)
		}
		verify2()
	})
}
