package cli

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestSSHConfigInstallUninstall runs `banger ssh-config` against a fake
// home: the generated file is valid for ssh, --install adds one marked
// Include block at the top (idempotent) and --uninstall restores the file.
func TestSSHConfigInstallUninstall(t *testing.T) {
	home, bhome := t.TempDir(), t.TempDir()
	t.Setenv("HOME", home)
	t.Setenv("BANGER_HOME", bhome)
	userConf := filepath.Join(home, ".ssh", "config")
	original := "Host work\n    User me\n"
	if err := os.MkdirAll(filepath.Dir(userConf), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(userConf, []byte(original), 0o640); err != nil {
		t.Fatal(err)
	}
	run := func(args ...string) string {
		t.Helper()
		var out, errb bytes.Buffer
		if code := Main(context.Background(), args, strings.NewReader(""), &out, &errb); code != 0 {
			t.Fatalf("banger %v: exit %d: %s", args, code, errb.String())
		}
		return out.String()
	}

	run("ssh-config")
	if b, _ := os.ReadFile(userConf); string(b) != original {
		t.Fatalf("ssh-config without --install changed %s:\n%s", userConf, b)
	}
	for range 2 {
		run("ssh-config", "--install")
	}
	b, _ := os.ReadFile(userConf)
	conf := string(b)
	if strings.Count(conf, "# >>> banger >>>") != 1 || !strings.HasPrefix(conf, "# >>> banger >>>") ||
		!strings.Contains(conf, "Include "+filepath.Join(bhome, "config", "ssh_config")) || !strings.HasSuffix(conf, original) {
		t.Fatalf("installed config:\n%s", conf)
	}
	if fi, _ := os.Stat(userConf); fi.Mode().Perm() != 0o640 {
		t.Fatalf("mode changed to %v", fi.Mode().Perm())
	}

	key := filepath.Join(bhome, "state", "ssh", "id_ed25519")
	if fi, err := os.Stat(key); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("private key: %v %v", fi, err)
	}
	if _, err := exec.LookPath("ssh"); err == nil {
		// ssh parses the result: NAME.vm gets root, banger's key and known_hosts.
		out, err := exec.Command("ssh", "-G", "-F", userConf, "dev.vm").CombinedOutput()
		if err != nil {
			t.Fatalf("ssh -G: %v %s", err, out)
		}
		exe, _ := os.Executable()
		proxy := "proxycommand env BANGER_HOME=" + bhome + " " + exe + " ssh-config proxy %n %p"
		for _, want := range []string{"user root", "identityfile " + key, "stricthostkeychecking accept-new", "hashknownhosts no", proxy} {
			if !strings.Contains(string(out), want+"\n") {
				t.Fatalf("ssh -G lacks %q:\n%s", want, out)
			}
		}
		out, _ = exec.Command("ssh", "-G", "-F", userConf, "work").CombinedOutput()
		if !strings.Contains(string(out), "user me\n") {
			t.Fatalf("the user's own hosts changed:\n%s", out)
		}
	}
	if _, err := exec.LookPath("ssh-keygen"); err == nil {
		out, err := exec.Command("ssh-keygen", "-y", "-f", key).Output()
		pub, _ := os.ReadFile(key + ".pub")
		if err != nil || !strings.HasPrefix(string(pub), strings.TrimSpace(string(out))) {
			t.Fatalf("ssh-keygen -y: %v %q vs %q", err, out, pub)
		}
	}

	run("ssh-config", "--uninstall")
	if b, _ := os.ReadFile(userConf); string(b) != original {
		t.Fatalf("after --uninstall:\n%s", b)
	}
}

func TestParseCpArg(t *testing.T) {
	for in, want := range map[string]cpArg{
		"dev:/etc/hosts": {"dev", "/etc/hosts"},
		"dev:src":        {"dev", "/root/src"},
		"dev:":           {"dev", "/root"},
		"dev:/tmp/":      {"dev", "/tmp/"},
		"./a:b":          {"", "./a:b"},
		"/abs/path":      {"", "/abs/path"},
		"-":              {"", "-"},
		"Upper:x":        {"", "Upper:x"},
	} {
		if got := parseCpArg(in); got != want {
			t.Errorf("parseCpArg(%q) = %+v, want %+v", in, got, want)
		}
	}
}

func TestExecStartStatus(t *testing.T) {
	a := &App{Stderr: &bytes.Buffer{}}
	for msg, want := range map[string]int{
		`guest exec: executable "nosuchcmd" not found in PATH`: 127,
		`guest exec: executable "/bin/nope" not found`:         127,
		`guest exec: "/etc/passwd" is not executable`:          126,
		`guest exec: working directory "/x" does not exist`:    0,
		`vm "x" not found`: 0,
	} {
		code, ok := a.execStartStatus(errString(msg))
		if code != want || ok != (want != 0) {
			t.Errorf("%s: got %d %v, want %d", msg, code, ok, want)
		}
	}
}

type errString string

func (e errString) Error() string { return string(e) }

func TestQuoteShell(t *testing.T) {
	for in, want := range map[string]string{
		"/usr/local/bin/banger": "/usr/local/bin/banger",
		"BANGER_HOME=/tmp/x":    "BANGER_HOME=/tmp/x",
		"/my dir/banger":        "'/my dir/banger'",
		"/it's/banger":          `'/it'\''s/banger'`,
		"/100%/banger":          "/100%%/banger",
	} {
		if got := quoteShell(in); got != want {
			t.Errorf("quoteShell(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestRemoteCommand(t *testing.T) {
	got := strings.Join(remoteCommand([]string{"printf", "%s|", "a b", "it's"}, true), " ")
	if want := `-tt -- 'printf' '%s|' 'a b' 'it'\''s'`; got != want {
		t.Errorf("remoteCommand = %s, want %s", got, want)
	}
	if got := remoteCommand(nil, false); len(got) != 0 {
		t.Errorf("no command: %q", got)
	}
}
