package kerneltest

import (
	"os"
	"os/exec"
	"strings"
	"testing"
)

func TestDebianCloudDeb(t *testing.T) {
	p := DebianCloudDeb(t)
	st, err := os.Stat(p)
	if err != nil {
		t.Fatal(err)
	}
	if st.Size() < 1<<20 {
		t.Fatalf("%s is only %d bytes; expected a real kernel package", p, st.Size())
	}
	if _, err := exec.LookPath("dpkg-deb"); err != nil {
		t.Skip("dpkg-deb not installed")
	}
	out, err := exec.Command("dpkg-deb", "-f", p, "Package").Output()
	if err != nil {
		t.Fatalf("dpkg-deb -f %s: %v", p, err)
	}
	pkg := strings.TrimSpace(string(out))
	if !strings.HasPrefix(pkg, "linux-image-") || !strings.HasSuffix(pkg, "-cloud-amd64") || pkg == DebianCloudPackage {
		t.Fatalf("package name %q is not a versioned cloud kernel", pkg)
	}
	// A second call hits the cache and returns the same file.
	if again := DebianCloudDeb(t); again != p {
		t.Fatalf("second call returned %s, want %s", again, p)
	}
}

func TestDebianCloudKernel(t *testing.T) {
	if testing.Short() {
		t.Skip("imports a real kernel package")
	}
	k := DebianCloudKernel(t)
	if k.Version == "" || k.ModulesDir == "" || k.Vmlinux == "" || k.Vmlinuz == "" {
		t.Fatalf("kernel = %+v", k)
	}
	for _, p := range []string{k.Vmlinux, k.Vmlinuz, k.ModulesDir} {
		if _, err := os.Stat(p); err != nil {
			t.Fatal(err)
		}
	}
	if again := DebianCloudKernel(t); again.Dir != k.Dir || again.SHA256 != k.SHA256 {
		t.Fatalf("second call returned %+v", again)
	}
}
