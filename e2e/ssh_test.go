package e2e

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/bangerdev/banger/internal/api"
	"github.com/bangerdev/banger/internal/testenv"
)

// sshdImage returns a Debian bookworm minbase ext4 with systemd and
// openssh-server, built with debootstrap on first use and cached.
func sshdImage(t *testing.T) string {
	return testenv.BuildDebianImage(t, testenv.DebianImage{
		File: "e2e-bookworm-sshd.ext4", Label: "bookworm-sshd",
		Include: []string{"openssh-server", "systemd-sysv", "iproute2"},
	})
}

// waitSSHBanner waits until addr answers with an SSH banner.
func waitSSHBanner(t *testing.T, addr string, timeout time.Duration) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		conn, err := net.DialTimeout("tcp", addr, 2*time.Second)
		if err == nil {
			conn.SetReadDeadline(time.Now().Add(5 * time.Second))
			line, rerr := bufio.NewReader(conn).ReadString('\n')
			conn.Close()
			if rerr == nil && strings.HasPrefix(line, "SSH-2.0-") {
				return
			}
			err = fmt.Errorf("banner %q: %v", line, rerr)
		}
		if time.Now().After(deadline) {
			t.Fatalf("sshd at %s did not answer in %v: %v", addr, timeout, err)
		}
		time.Sleep(500 * time.Millisecond)
	}
}

// TestSSH drives `banger vm ssh` and `banger ssh-config` through the real
// OpenSSH client against a Debian guest running sshd on a NAT network.
func TestSSH(t *testing.T) {
	testenv.RequireBinary(t, "ssh")
	img := sshdImage(t)
	ne := newNetEnv(t)
	e := ne.env
	e.must("image", "register", "--name", "sshd", "--rootfs", img, "--kernel-ref", "cloud")

	start := time.Now()
	var vm api.VMInfo
	if err := json.Unmarshal([]byte(e.must("vm", "create", "--name", "s1", "--image", "sshd", "--memory", vmMemory, "--net", "nat", "-o", "json")), &vm); err != nil {
		t.Fatal(err)
	}
	if vm.Network.IP == "" {
		t.Fatalf("vm has no address: %+v", vm.Network)
	}
	t.Cleanup(func() { e.run("vm", "delete", "-f", "s1") })
	t.Logf("vm create (agent up): %v", time.Since(start).Round(time.Millisecond))
	// The first command of a systemd guest runs once basic.target is
	// active (sockets listening), not in the half-booted system the agent
	// already answers from.
	if out := e.guest("s1", "systemctl", "is-active", "sockets.target", "basic.target"); out != "active\nactive\n" {
		t.Fatalf("first command ran before basic.target: %q", out)
	}
	t.Logf("first command done: %v after create", time.Since(start).Round(time.Millisecond))
	waitSSHBanner(t, net.JoinHostPort(vm.Network.IP, "22"), 3*time.Minute)
	t.Logf("sshd answering: %v after create", time.Since(start).Round(time.Millisecond))

	sshDir := filepath.Join(e.home, "state", "ssh")
	known := filepath.Join(sshDir, "known_hosts")
	if _, err := os.Stat(known); err == nil {
		t.Fatal("known_hosts exists before the first ssh")
	}
	guestKey := strings.Fields(e.guest("s1", "cat", "/etc/ssh/ssh_host_ed25519_key.pub"))
	// The VM got its own host keys, not the ones baked into the image.
	baked, err := exec.Command("debugfs", "-R", "cat /etc/ssh/ssh_host_ed25519_key.pub", img).Output()
	if err != nil || len(guestKey) < 2 {
		t.Fatalf("reading host keys: %v %q", err, guestKey)
	}
	if strings.Contains(string(baked), guestKey[1]) {
		t.Fatalf("vm s1 kept the image's host key %s", guestKey[1])
	}
	// $SSH_CONNECTION is set by sshd only: "client port server 22".
	probe := "echo hi $SSH_CONNECTION"
	viaSSH := func(t *testing.T, r result) {
		t.Helper()
		f := strings.Fields(r.stdout)
		if r.code != 0 || len(f) != 5 || f[0] != "hi" || f[3] != vm.Network.IP || f[4] != "22" {
			t.Fatalf("not through sshd: %+v\n%s", r, e.daemonLog())
		}
	}

	e.sub(t, "vm-ssh-first-use", func(t *testing.T) {
		t0 := time.Now()
		// Without --ssh the words after -- are an argv, as with vm exec.
		r := e.run("vm", "ssh", "s1", "--", "sh", "-c", probe)
		t.Logf("first vm ssh (key authorized through the agent, host key learnt): %v", time.Since(t0).Round(time.Millisecond))
		viaSSH(t, r)
		b, err := os.ReadFile(known)
		if err != nil {
			t.Fatalf("known_hosts after first use: %v", err)
		}
		if want := "s1.vm " + guestKey[0] + " " + guestKey[1]; !strings.Contains(string(b), want) {
			t.Fatalf("known_hosts lacks %q:\n%s", want, b)
		}
		auth := e.guest("s1", "cat", "/root/.ssh/authorized_keys")
		pub, _ := os.ReadFile(filepath.Join(sshDir, "id_ed25519.pub"))
		if strings.Count(auth, strings.TrimSpace(string(pub))) != 1 {
			t.Fatalf("authorized_keys %q lacks banger's key %q once", auth, pub)
		}
	})

	e.sub(t, "vm-ssh-reuses-known-host", func(t *testing.T) {
		before, _ := os.ReadFile(known)
		t0 := time.Now()
		viaSSH(t, e.run("vm", "ssh", "--ssh", "s1", "--", probe))
		t.Logf("second vm ssh --ssh: %v", time.Since(t0).Round(time.Millisecond))
		after, _ := os.ReadFile(known)
		if string(after) != string(before) {
			t.Fatalf("known_hosts changed on reuse:\n%s\n---\n%s", before, after)
		}
		auth := e.guest("s1", "cat", "/root/.ssh/authorized_keys")
		if n := strings.Count(auth, "banger"); n != 1 {
			t.Fatalf("banger's key authorized %d times:\n%s", n, auth)
		}
		// Quoting survives the remote shell; -t gives a terminal; the
		// command's status is banger's.
		if r := e.run("vm", "ssh", "s1", "--", "printf", "%s|", "a b", "it's", "$HOME"); r.code != 0 || r.stdout != "a b|it's|$HOME|" {
			t.Fatalf("argv through ssh: %+v", r)
		}
		if r := e.run("vm", "ssh", "-t", "s1", "--", "sh", "-c", "tty; test -n \"$SSH_CONNECTION\""); r.code != 0 || !strings.HasPrefix(r.stdout, "/dev/pts/") {
			t.Fatalf("vm ssh -t: %+v", r)
		}
		if r := e.run("vm", "ssh", "s1", "--", "sh", "-c", "test -n \"$SSH_CONNECTION\" && exit 3"); r.code != 3 {
			t.Fatalf("exit status through ssh: %+v", r)
		}
		// --agent bypasses sshd.
		r := e.run("vm", "ssh", "--agent", "s1", "--", "sh", "-c", "echo ${SSH_CONNECTION:-agent}")
		if r.code != 0 || strings.TrimSpace(r.stdout) != "agent" {
			t.Fatalf("vm ssh --agent: %+v", r)
		}
	})

	e.sub(t, "tofu-refuses-changed-key", func(t *testing.T) {
		good, _ := os.ReadFile(known)
		pub, _ := os.ReadFile(filepath.Join(sshDir, "id_ed25519.pub"))
		f := strings.Fields(string(pub))
		if err := os.WriteFile(known, []byte("s1.vm "+f[0]+" "+f[1]+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		r := e.run("vm", "ssh", "--ssh", "s1", "--", probe)
		if r.code == 0 || strings.Contains(r.stdout, "hi") || !strings.Contains(r.stderr, "IDENTIFICATION HAS CHANGED") {
			t.Fatalf("a changed host key was accepted: %+v", r)
		}
		// The same name on another VM (a deleted and recreated one) starts
		// trust afresh: the stale key is dropped and the new one learnt.
		ids := filepath.Join(sshDir, "known_vm_ids")
		if err := os.WriteFile(ids, []byte("s1.vm 0123456789abcdef\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		viaSSH(t, e.run("vm", "ssh", "--ssh", "s1", "--", probe))
		if b, _ := os.ReadFile(known); string(b) != string(good) {
			t.Fatalf("known_hosts after a new vm of the same name:\n%s\nwant:\n%s", b, good)
		}
		if b, _ := os.ReadFile(ids); !strings.Contains(string(b), "s1.vm "+vm.ID) {
			t.Fatalf("known_vm_ids: %s", b)
		}
	})

	e.sub(t, "ssh-config", func(t *testing.T) {
		e.must("ssh-config")
		conf := filepath.Join(e.home, "config", "ssh_config")
		// The ProxyCommand authorizes the key itself: drop it from the guest.
		e.guest("s1", "rm", "/root/.ssh/authorized_keys")
		var env []string
		for _, kv := range os.Environ() {
			if !strings.HasPrefix(kv, "BANGER_") {
				env = append(env, kv)
			}
		}
		ssh := func(host string) result {
			return sshClient(t, env, conf, host, probe)
		}
		before, _ := os.ReadFile(known)
		t0 := time.Now()
		viaSSH(t, ssh("s1.vm"))
		t.Logf("ssh -F ssh_config s1.vm: %v", time.Since(t0).Round(time.Millisecond))
		if after, _ := os.ReadFile(known); string(after) != string(before) {
			t.Fatalf("ssh s1.vm did not reuse the host key vm ssh learnt:\n%s\n---\n%s", before, after)
		}
		if r := ssh("nope.vm"); r.code == 0 || !strings.Contains(r.stderr, "nope") {
			t.Fatalf("ssh to an unknown vm: %+v", r)
		}
		// --install: a user config that includes banger's (ssh reads the
		// user's real ~/.ssh/config from the password database, so the
		// test hands it the file with -F).
		home := t.TempDir()
		os.MkdirAll(filepath.Join(home, ".ssh"), 0o700)
		userConf := filepath.Join(home, ".ssh", "config")
		os.WriteFile(userConf, []byte("Host other\n    User me\n"), 0o600)
		if r := e.runEnv([]string{"HOME=" + home}, nil, "ssh-config", "--install"); r.code != 0 {
			t.Fatalf("ssh-config --install: %+v", r)
		}
		viaSSH(t, sshClient(t, env, userConf, "s1.vm", probe))
		log := e.guest("s1", "journalctl", "-u", "ssh", "--no-pager")
		if n := strings.Count(log, "Accepted publickey for root"); n < 4 {
			t.Fatalf("sshd logged %d key logins:\n%s", n, log)
		}
	})

	e.sub(t, "interactive", func(t *testing.T) { sshInteractive(t, e, vm.Network.IP) })
}

// sshClient runs the system ssh with config conf and env against host.
func sshClient(t *testing.T, env []string, conf, host string, argv ...string) result {
	t.Helper()
	cmd := exec.Command("ssh", append([]string{"-F", conf, "-o", "BatchMode=yes", host}, argv...)...)
	cmd.Env = env // the config names banger's home itself
	var out, errb strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	r := result{stdout: out.String(), stderr: errb.String()}
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		r.code = ee.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	return r
}

// sshInteractive drives `banger vm ssh NAME` (no command: a login shell
// over real ssh) inside tmux: the shell is sshd's, on a terminal, and the
// remote exit status becomes banger's.
func sshInteractive(t *testing.T, e *env, ip string) {
	testenv.RequireBinary(t, "tmux")
	sock := "banger-e2e-ssh-" + filepath.Base(e.home)
	tmux := func(args ...string) string {
		out, err := exec.Command("tmux", append([]string{"-L", sock}, args...)...).CombinedOutput()
		if err != nil {
			t.Fatalf("tmux %v: %v %s", args, err, out)
		}
		return string(out)
	}
	shell := fmt.Sprintf("env BANGER_HOME=%s BANGER_DAEMON_BIN=%s %s vm ssh s1; echo BANGER-EXIT=$?; sleep 600", e.home, e.bins.Bangerd, e.bins.Banger)
	tmux("new-session", "-d", "-s", "t", "-x", "120", "-y", "30", shell)
	t.Cleanup(func() { _ = exec.Command("tmux", "-L", sock, "kill-server").Run() })
	screen := func() string { return tmux("capture-pane", "-p", "-t", "t") }
	waitFor := func(what string, d time.Duration) {
		t.Helper()
		deadline := time.Now().Add(d)
		for !regexpMatch(what, screen()) {
			if time.Now().After(deadline) {
				t.Fatalf("waiting for %q; screen:\n%s", what, screen())
			}
			time.Sleep(200 * time.Millisecond)
		}
	}
	waitFor(`(?m)#\s*$`, time.Minute)
	tmux("send-keys", "-t", "t", "echo conn=$SSH_CONNECTION tty=$(tty)", "Enter")
	waitFor(`(?m)^conn=\S+ \d+ `+regexp.QuoteMeta(ip)+` 22 tty=/dev/pts/\d+\s*$`, 30*time.Second)
	tmux("send-keys", "-t", "t", "exit 7", "Enter")
	waitFor(`BANGER-EXIT=`, 30*time.Second)
	if s := screen(); !strings.Contains(s, "BANGER-EXIT=7") {
		t.Fatalf("exit status through ssh; screen:\n%s", s)
	}
}
