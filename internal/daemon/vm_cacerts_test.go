package daemon

import (
	"bytes"
	"encoding/pem"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/bangerdev/banger/internal/testenv"
)

// testCA is the DER of a new self-signed CA certificate named cn.
func testCA(t *testing.T, cn string) []byte { return testenv.NewCA(t, cn).DER }

func certPEM(der []byte) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
}

func TestCAFileName(t *testing.T) {
	for in, want := range map[string]string{
		"/etc/corp/Corp Root CA.crt":  "Corp-Root-CA",
		"/x/sandboxing-egress-ca.crt": "sandboxing-egress-ca",
		"/x/bundle.pem":               "bundle",
		"/x/.hidden.pem":              "hidden",
		"/x/noext":                    "noext",
		"/x/ünï.crt":                  "n",
		"/x/...crt":                   "ca",
	} {
		if got := caFileName(in); got != want {
			t.Errorf("caFileName(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestGuestCACertsNames(t *testing.T) {
	dir := t.TempDir()
	a, b, c := testCA(t, "a"), testCA(t, "b"), testCA(t, "c")
	write := func(rel string, data ...[]byte) string {
		p := filepath.Join(dir, rel)
		os.MkdirAll(filepath.Dir(p), 0o755)
		if err := os.WriteFile(p, bytes.Join(data, nil), 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	got, err := guestCACerts([]string{
		write("one/corp.crt", certPEM(a)),
		write("two/corp.pem", certPEM(b), certPEM(c)), // same base name, two certificates
	})
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, g := range got {
		names = append(names, g.Name)
	}
	if want := []string{"corp", "corp-2-1", "corp-2-2"}; !slices.Equal(names, want) {
		t.Fatalf("names = %q, want %q", names, want)
	}
	if !bytes.Equal(got[0].DER, a) || !bytes.Equal(got[1].DER, b) || !bytes.Equal(got[2].DER, c) {
		t.Fatal("certificates out of order")
	}
	if _, err := guestCACerts([]string{filepath.Join(dir, "gone.crt")}); err == nil || !strings.Contains(err.Error(), "gone.crt") {
		t.Fatalf("missing file: err = %v", err)
	}
}

func TestMissingFromBundle(t *testing.T) {
	a, b := testCA(t, "a"), testCA(t, "b")
	certs := []guestCACert{{Name: "a", DER: a}, {Name: "b", DER: b}}
	bundle := append([]byte("# roots\n"), certPEM(a)...)
	m := missingFromBundle(bundle, certs)
	if len(m) != 1 || m[0].Name != "b" {
		t.Fatalf("missing = %+v, want b", m)
	}
	if m := missingFromBundle(append(bundle, certPEM(b)...), certs); len(m) != 0 {
		t.Fatalf("missing = %+v, want none", m)
	}
	if m := missingFromBundle(nil, certs); len(m) != 2 {
		t.Fatalf("empty bundle: missing %d, want 2", len(m))
	}
}

// TestGuestCAScript runs the guest-side script with the host's sh on a
// scratch tree, with a fake update-ca-certificates that counts its runs
// and rebuilds the bundle from the local directory.
func TestGuestCAScript(t *testing.T) {
	if _, err := exec.LookPath("cmp"); err != nil {
		t.Skip("cmp not installed")
	}
	root := t.TempDir()
	stage, local, bundle := filepath.Join(root, "staging"), filepath.Join(root, "local", "banger"), filepath.Join(root, "bundle.crt")
	bin := filepath.Join(root, "bin")
	runs := filepath.Join(root, "runs")
	os.MkdirAll(bin, 0o755)
	fake := "#!/bin/sh\necho run >> " + runs + "\ncat " + local + "/*.crt > " + bundle + " 2>/dev/null\necho '1 added' >&2\n"
	if err := os.WriteFile(filepath.Join(bin, "update-ca-certificates"), []byte(fake), 0o755); err != nil {
		t.Fatal(err)
	}
	a, b := certPEM(testCA(t, "a")), certPEM(testCA(t, "b"))
	run := func(withTool bool, files map[string][]byte) (status, rest string) {
		t.Helper()
		os.MkdirAll(stage, 0o755)
		for n, data := range files {
			if err := os.WriteFile(filepath.Join(stage, n+".pem"), data, 0o644); err != nil {
				t.Fatal(err)
			}
		}
		path := "/usr/bin:/bin"
		if withTool {
			path = bin + ":" + path
		}
		cmd := exec.Command("/bin/sh", "-c", guestCAScript, "sh", stage, local, bundle)
		cmd.Env = []string{"PATH=" + path}
		var errb bytes.Buffer
		cmd.Stderr = &errb
		out, err := cmd.Output()
		if err != nil {
			t.Fatalf("script: %v\n%s", err, errb.String())
		}
		if _, err := os.Stat(stage); !os.IsNotExist(err) {
			t.Fatalf("staging dir left: %v", err)
		}
		status, rest, _ = strings.Cut(string(out), "\n")
		return status, rest
	}
	count := func() int {
		b, _ := os.ReadFile(runs)
		return strings.Count(string(b), "run")
	}
	localFiles := func() []string {
		ents, _ := os.ReadDir(local)
		var n []string
		for _, e := range ents {
			n = append(n, e.Name())
		}
		return n
	}

	if st, rest := run(true, map[string][]byte{"a": a, "b": b}); st != "updated" || count() != 1 || rest != string(a)+string(b) {
		t.Fatalf("first install: status %q, %d runs, bundle %q", st, count(), rest)
	}
	if got := localFiles(); !slices.Equal(got, []string{".updated", "a.crt", "b.crt"}) {
		t.Fatalf("local dir = %q", got)
	}
	// Same files again (a restart): the tool does not run again.
	if st, _ := run(true, map[string][]byte{"a": a, "b": b}); st != "unchanged" || count() != 1 {
		t.Fatalf("restart: status %q, %d runs", st, count())
	}
	// b dropped from the config: its file goes, the tool runs.
	if st, rest := run(true, map[string][]byte{"a": a}); st != "updated" || count() != 2 || rest != string(a) {
		t.Fatalf("removal: status %q, %d runs, bundle %q", st, count(), rest)
	}
	if got := localFiles(); !slices.Equal(got, []string{".updated", "a.crt"}) {
		t.Fatalf("local dir after removal = %q", got)
	}
	// An interrupted earlier run (no marker) is redone.
	os.Remove(filepath.Join(local, ".updated"))
	if st, _ := run(true, map[string][]byte{"a": a}); st != "updated" || count() != 3 {
		t.Fatalf("after interruption: status %q, %d runs", st, count())
	}
	// Without the tool the script reports it and hands back the bundle.
	if st, rest := run(false, map[string][]byte{"a": a, "b": b}); st != "no-tool" || rest != string(a) || count() != 3 {
		t.Fatalf("no tool: status %q, bundle %q", st, rest)
	}
	os.Remove(bundle)
	if st, rest := run(false, map[string][]byte{"a": a}); st != "no-tool" || rest != "" {
		t.Fatalf("no tool, no bundle: status %q, rest %q", st, rest)
	}
}
