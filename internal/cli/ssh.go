package cli

import (
	"bufio"
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"golang.org/x/crypto/ssh"

	"github.com/bangerdev/banger/internal/agentproto"
	"github.com/bangerdev/banger/internal/api"
	"github.com/bangerdev/banger/internal/client"
	"github.com/bangerdev/banger/internal/errkind"
	"github.com/bangerdev/banger/internal/fsatomic"
	"github.com/bangerdev/banger/internal/paths"
)

// Files of banger's SSH identity, in the state dir's ssh/ directory.
const (
	sshKeyName      = "id_ed25519"
	sshKnownHosts   = "known_hosts"
	sshKnownIDs     = "known_vm_ids" // name → VM id whose host key known_hosts holds
	sshConfigName   = "ssh_config"
	sshBlockBegin   = "# >>> banger >>> (managed by `banger ssh-config`; remove with --uninstall)"
	sshBlockEnd     = "# <<< banger <<<"
	sshProbeTimeout = 500 * time.Millisecond
)

func (a *App) vmSSHCommand() *cobra.Command {
	var useAgent, useSSH, tty bool
	cmd := &cobra.Command{
		Use:   "ssh NAME [-- COMMAND [ARGS...]]",
		Short: "Open a shell in a running VM (or run a command there)",
		Long: `ssh opens a login shell in a VM, or runs a command there (argv as with
vm exec; -t gives it a terminal).

When the VM has a network address and sshd answers on port 22, it goes
through the system ssh client, with banger's own key (ed25519, generated in
the state directory and authorized in the guest through its agent before
ssh connects) and banger's known_hosts, which trusts each VM's host key on
first use and refuses a changed one. Otherwise it goes through the guest
agent: no sshd, key or network needed, still with a real terminal (resize,
Ctrl-C and Ctrl-D as usual).

--agent always uses the agent. --ssh always uses ssh (an error when the VM
cannot be reached) and hands the arguments after -- to ssh unchanged, so
they may be ssh options and a remote command line. See also banger
ssh-config for plain ` + "`ssh NAME.vm`" + `.`,
		Example: `  banger vm ssh dev
  banger vm ssh dev -- uptime
  banger vm ssh --ssh dev -- -L 8080:localhost:8080`,
		Args:              cobra.MinimumNArgs(1),
		ValidArgsFunction: a.completeVMs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if useAgent && useSSH {
				return usageErrorf("--agent and --ssh do not mix")
			}
			name, rest := args[0], args[1:]
			c, err := a.client(cmd.Context())
			if err != nil {
				return err
			}
			vm, err := c.ShowVM(cmd.Context(), name)
			if err != nil {
				return err
			}
			if useSSH && vm.Network.IP == "" {
				return errkind.WithHint(errkind.New(errkind.Conflict, "vm %s has no network address", vm.Name),
					"create it with a network (--net nat), or drop --ssh to use the guest agent")
			}
			if useSSH || (!useAgent && sshReachable(vm)) {
				err := a.authorizeKey(cmd.Context(), c, vm.Name)
				if err == nil || useSSH {
					if err != nil {
						return err
					}
					if !useSSH {
						// A command keeps its argv whichever way it goes.
						rest = remoteCommand(rest, tty)
					}
					return a.systemSSH(cmd.Context(), vm, rest, useSSH)
				}
				// sshd answers but the key cannot be installed: use the agent.
			}
			o := execOpts{tty: tty || (len(rest) == 0 && a.stdinIsTerminal())}
			code, err := a.execIn(cmd.Context(), c, name, rest, o)
			if err != nil {
				return err
			}
			return exitCode(code)
		},
	}
	cmd.Flags().BoolVar(&useAgent, "agent", false, "always use the guest agent (the default unless the VM answers ssh)")
	cmd.Flags().BoolVar(&useSSH, "ssh", false, "use the system ssh client (needs a network address and sshd in the image)")
	cmd.Flags().BoolVarP(&tty, "tty", "t", false, "run the command on a pseudo-terminal")
	return cmd
}

// remoteCommand turns a command's argv into ssh arguments: -t when a
// terminal is asked for (-tt: even when banger's stdin is not one, as the
// agent does), then each word quoted for the remote shell.
func remoteCommand(argv []string, tty bool) []string {
	var out []string
	if tty {
		out = append(out, "-tt")
	}
	if len(argv) > 0 {
		out = append(out, "--")
		q := make([]string, len(argv))
		for i, w := range argv {
			q[i] = "'" + strings.ReplaceAll(w, "'", `'\''`) + "'"
		}
		out = append(out, strings.Join(q, " "))
	}
	return out
}

// sshReachable reports whether the VM answers on port 22 of its address.
func sshReachable(vm api.VMInfo) bool {
	if vm.Network.IP == "" || vm.State != "running" {
		return false
	}
	conn, err := net.DialTimeout("tcp", net.JoinHostPort(vm.Network.IP, "22"), sshProbeTimeout)
	if err != nil {
		return false
	}
	conn.Close()
	return true
}

// systemSSH runs the system ssh client against the VM with banger's key
// and known_hosts, and exits with its status.
func (a *App) systemSSH(ctx context.Context, vm api.VMInfo, args []string, forced bool) error {
	bin, err := exec.LookPath("ssh")
	if err != nil {
		if forced {
			return errkind.New(errkind.Unavailable, "the ssh client is not installed (openssh-client)")
		}
		return errkind.New(errkind.Unavailable, "the ssh client is not installed: use --agent")
	}
	key, _, err := ensureSSHKey(a.Layout.SSHDir())
	if err != nil {
		return err
	}
	known := filepath.Join(a.Layout.SSHDir(), sshKnownHosts)
	alias := hostAlias(vm.Name)
	if err := forgetReplacedHostKey(a.Layout.SSHDir(), alias, vm.ID); err != nil {
		return err
	}
	argv := append([]string{
		"-i", key, "-o", "IdentitiesOnly=yes", "-o", "User=root",
		"-o", "UserKnownHostsFile=" + known, "-o", "StrictHostKeyChecking=accept-new",
		"-o", "HashKnownHosts=no", "-o", "HostKeyAlias=" + alias, vm.Network.IP,
	}, args...)
	cmd := exec.CommandContext(ctx, bin, argv...)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = a.Stdin, a.Stdout, a.Stderr
	err = cmd.Run()
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		return exitCode(ee.ExitCode())
	}
	return err
}

// authorizeKey makes sure banger's public key is in the guest's
// /root/.ssh/authorized_keys (appending it through the agent if needed).
func (a *App) authorizeKey(ctx context.Context, c *client.Client, name string) error {
	_, pub, err := ensureSSHKey(a.Layout.SSHDir())
	if err != nil {
		return err
	}
	script := `umask 077; mkdir -p /root/.ssh && touch /root/.ssh/authorized_keys && ` +
		`{ grep -qxF "$BANGER_KEY" /root/.ssh/authorized_keys || echo "$BANGER_KEY" >> /root/.ssh/authorized_keys; }`
	conn, err := c.Exec(ctx, name, agentproto.ExecRequest{Argv: []string{"sh", "-c", script}, Env: []string{"BANGER_KEY=" + pub}, User: "root"})
	if err != nil {
		return fmt.Errorf("authorizing banger's ssh key in %s: %w", name, err)
	}
	defer conn.Close()
	es := agentproto.NewExecStream(conn)
	_ = es.CloseStdin()
	var errb bytes.Buffer
	st, err := es.Wait(nil, &errb)
	if err == nil && st.Code != 0 {
		err = fmt.Errorf("exit %d: %s", st.Code, strings.TrimSpace(errb.String()))
	}
	if err != nil {
		return fmt.Errorf("authorizing banger's ssh key in %s: %w", name, err)
	}
	return nil
}

// Entries of banger's known_hosts are never hashed (HashKnownHosts no,
// whatever the system ssh_config says) so that forgetReplacedHostKey can
// find them by name.

// forgetReplacedHostKey drops the known_hosts entry of alias when it was
// learnt from another VM of the same name (deleted and created again), so
// that trust on first use applies per VM rather than per name.
func forgetReplacedHostKey(dir, alias, id string) error {
	idsPath := filepath.Join(dir, sshKnownIDs)
	ids := map[string]string{}
	if b, err := os.ReadFile(idsPath); err == nil {
		for _, line := range strings.Split(string(b), "\n") {
			if k, v, ok := strings.Cut(line, " "); ok {
				ids[k] = v
			}
		}
	}
	if ids[alias] == id {
		return nil
	}
	if old := ids[alias]; old != "" {
		if err := removeKnownHost(filepath.Join(dir, sshKnownHosts), alias); err != nil {
			return err
		}
	}
	ids[alias] = id
	var sb strings.Builder
	for k, v := range ids {
		fmt.Fprintf(&sb, "%s %s\n", k, v)
	}
	return fsatomic.WriteFile(idsPath, []byte(sb.String()), 0o600)
}

// removeKnownHost deletes the lines of a known_hosts file naming host.
func removeKnownHost(path, host string) error {
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("reading %s: %w", path, err)
	}
	var out []string
	for _, line := range strings.Split(strings.TrimRight(string(b), "\n"), "\n") {
		hosts, _, _ := strings.Cut(line, " ")
		drop := false
		for _, h := range strings.Split(hosts, ",") {
			if h == host {
				drop = true
			}
		}
		if !drop && line != "" {
			out = append(out, line)
		}
	}
	data := strings.Join(out, "\n")
	if data != "" {
		data += "\n"
	}
	return fsatomic.WriteFile(path, []byte(data), 0o600)
}

// ensureSSHKey returns banger's private key path and public key line,
// generating an ed25519 pair in dir on first use.
func ensureSSHKey(dir string) (keyPath, pub string, err error) {
	keyPath = filepath.Join(dir, sshKeyName)
	if b, err := os.ReadFile(keyPath + ".pub"); err == nil {
		if _, err := os.Stat(keyPath); err == nil {
			return keyPath, strings.TrimSpace(string(b)), nil
		}
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return "", "", fmt.Errorf("creating %s: %w", dir, err)
	}
	pubKey, privKey, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return "", "", fmt.Errorf("generating the ssh key: %w", err)
	}
	block, err := ssh.MarshalPrivateKey(privKey, "banger")
	if err != nil {
		return "", "", fmt.Errorf("encoding the ssh key: %w", err)
	}
	sshPub, err := ssh.NewPublicKey(pubKey)
	if err != nil {
		return "", "", fmt.Errorf("encoding the ssh key: %w", err)
	}
	pub = strings.TrimSpace(string(ssh.MarshalAuthorizedKey(sshPub))) + " banger"
	if err := fsatomic.WriteFile(keyPath, pem.EncodeToMemory(block), 0o600); err != nil {
		return "", "", err
	}
	if err := fsatomic.WriteFile(keyPath+".pub", []byte(pub+"\n"), 0o644); err != nil {
		return "", "", err
	}
	return keyPath, pub, nil
}

func (a *App) sshConfigCommand() *cobra.Command {
	var install, uninstall bool
	cmd := &cobra.Command{
		Use:   "ssh-config",
		Short: "Write an ssh_config so that `ssh NAME.vm` reaches banger VMs",
		Long: `ssh-config writes banger's ssh_config (in banger's config directory) for
hosts NAME.vm: user root, banger's own key (generated on first use) and a
known_hosts file that trusts each VM's host key on first use. It needs VMs
with a network address and sshd in the image.

NAME.vm need not resolve on the host: the config's ProxyCommand runs
banger, which asks the daemon for the VM's address, authorizes banger's key
in the guest through its agent, and connects to port 22 there.

~/.ssh/config is changed only with --install, which adds an Include line
inside a marked block (again: replaced, not duplicated); --uninstall removes
the block.`,
		Example: `  banger ssh-config
  banger ssh-config --install && ssh dev.vm
  banger ssh-config --uninstall`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if install && uninstall {
				return usageErrorf("--install and --uninstall do not mix")
			}
			home, err := os.UserHomeDir()
			if err != nil {
				return fmt.Errorf("finding the home directory: %w", err)
			}
			userConfig := filepath.Join(home, ".ssh", "config")
			confPath := filepath.Join(a.Layout.ConfigDir, sshConfigName)
			if uninstall {
				changed, err := editSSHBlock(userConfig, "")
				if err != nil {
					return err
				}
				if changed {
					fmt.Fprintf(a.Stdout, "removed banger's block from %s\n", userConfig)
				} else {
					fmt.Fprintf(a.Stdout, "%s has no banger block\n", userConfig)
				}
				return nil
			}
			key, _, err := ensureSSHKey(a.Layout.SSHDir())
			if err != nil {
				return err
			}
			if err := os.MkdirAll(a.Layout.ConfigDir, 0o755); err != nil {
				return fmt.Errorf("creating %s: %w", a.Layout.ConfigDir, err)
			}
			proxy, err := proxyCommand()
			if err != nil {
				return err
			}
			if err := fsatomic.WriteFile(confPath, []byte(sshConfigText(key, filepath.Join(a.Layout.SSHDir(), sshKnownHosts), proxy)), 0o644); err != nil {
				return err
			}
			if install {
				if _, err := editSSHBlock(userConfig, "Include "+quoteSSH(confPath)); err != nil {
					return err
				}
			}
			if a.Output == "json" {
				return a.printJSON(map[string]any{"config": confPath, "key": key, "installed": install, "user_config": userConfig})
			}
			fmt.Fprintf(a.Stdout, "wrote %s\n", confPath)
			if install {
				fmt.Fprintf(a.Stdout, "included from %s: `ssh NAME.vm` now uses it\n", userConfig)
			} else {
				fmt.Fprintf(a.Stdout, "use it with `ssh -F %s NAME.vm`, or run `banger ssh-config --install`\n", confPath)
			}
			return nil
		},
	}
	cmd.Flags().BoolVar(&install, "install", false, "include it from ~/.ssh/config (inside a marked block)")
	cmd.Flags().BoolVar(&uninstall, "uninstall", false, "remove banger's block from ~/.ssh/config")
	cmd.AddCommand(a.sshProxyCommand())
	return cmd
}

func sshConfigText(key, known, proxy string) string {
	return fmt.Sprintf(`# Written by `+"`banger ssh-config`"+`; rewritten on every run.
Host *.vm
    User root
    IdentityFile %s
    IdentitiesOnly yes
    UserKnownHostsFile %s
    StrictHostKeyChecking accept-new
    HashKnownHosts no
    ProxyCommand %s
    LogLevel ERROR
`, quoteSSH(key), quoteSSH(known), proxy)
}

// proxyCommand is the ssh_config ProxyCommand running this banger binary
// (with the BANGER_HOME it was written under) as `ssh-config proxy`.
func proxyCommand() (string, error) {
	exe, err := os.Executable()
	if err != nil {
		return "", fmt.Errorf("finding banger's own binary: %w", err)
	}
	cmd := quoteShell(exe) + " ssh-config proxy %n %p"
	if h := os.Getenv(paths.EnvHome); h != "" {
		cmd = "env " + quoteShell(paths.EnvHome+"="+h) + " " + cmd
	}
	return cmd, nil
}

// quoteShell quotes s for sh when it holds anything but plain path bytes.
// A '%' is doubled: ssh expands %-tokens in ProxyCommand.
func quoteShell(s string) string {
	s = strings.ReplaceAll(s, "%", "%%")
	if strings.Trim(s, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789/._-+=:,@%") == "" {
		return s
	}
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

// hostAlias is the name a VM's host key is recorded under in banger's
// known_hosts: NAME.vm, lower-cased as ssh does with host names.
func hostAlias(name string) string { return strings.ToLower(name) + ".vm" }

// sshProxyCommand is the ProxyCommand of banger's ssh_config: it looks up
// NAME.vm's address through the daemon, authorizes banger's key in the
// guest, and relays stdin/stdout to the guest's port.
func (a *App) sshProxyCommand() *cobra.Command {
	return &cobra.Command{
		Use:    "proxy NAME.vm PORT",
		Short:  "Connect ssh to a VM (the ProxyCommand of banger's ssh_config)",
		Hidden: true,
		Args:   cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			name := strings.TrimSuffix(args[0], ".vm")
			c, err := a.client(ctx)
			if err != nil {
				return err
			}
			vm, err := c.ShowVM(ctx, name)
			if err != nil {
				return err
			}
			if vm.State != "running" {
				return errkind.WithHint(errkind.New(errkind.Conflict, "vm %s is %s", vm.Name, vm.State),
					"start it with `banger vm start "+vm.Name+"`")
			}
			if vm.Network.IP == "" {
				return errkind.WithHint(errkind.New(errkind.Conflict, "vm %s has no network address", vm.Name),
					"create it with a network (--net nat), or use `banger vm ssh "+vm.Name+"` (the guest agent)")
			}
			if err := forgetReplacedHostKey(a.Layout.SSHDir(), hostAlias(args[0]), vm.ID); err != nil {
				return err
			}
			if err := a.authorizeKey(ctx, c, vm.Name); err != nil {
				// The user may have a key of their own in the image: go on.
				fmt.Fprintf(a.Stderr, "banger: %v\n", err)
			}
			conn, err := (&net.Dialer{Timeout: 10 * time.Second}).DialContext(ctx, "tcp", net.JoinHostPort(vm.Network.IP, args[1]))
			if err != nil {
				return fmt.Errorf("connecting to %s: %w", vm.Name, err)
			}
			defer conn.Close()
			go func() {
				_, _ = io.Copy(conn, a.Stdin)
				if tc, ok := conn.(*net.TCPConn); ok {
					_ = tc.CloseWrite()
				}
			}()
			// The guest closing the connection ends the session.
			_, err = io.Copy(a.Stdout, conn)
			return err
		},
	}
}

func quoteSSH(p string) string {
	if strings.ContainsAny(p, " \t\"") {
		return `"` + p + `"`
	}
	return p
}

// editSSHBlock puts body (one or more lines) inside banger's marked block
// at the top of an ssh config file, replacing an existing block; an empty
// body removes the block. It reports whether the file changed.
func editSSHBlock(path, body string) (bool, error) {
	old, err := os.ReadFile(path)
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return false, fmt.Errorf("reading %s: %w", path, err)
	}
	var kept []string
	in := false
	sc := bufio.NewScanner(strings.NewReader(string(old)))
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		switch {
		case strings.HasPrefix(line, "# >>> banger >>>"):
			in = true
		case in && strings.HasPrefix(line, sshBlockEnd):
			in = false
		case !in:
			kept = append(kept, line)
		}
	}
	rest := strings.TrimLeft(strings.Join(kept, "\n"), "\n")
	var b strings.Builder
	if body != "" {
		// At the top: an Include after a Host line would only apply to that host.
		b.WriteString(sshBlockBegin + "\n" + body + "\n" + sshBlockEnd + "\n")
		if rest != "" {
			b.WriteString("\n")
		}
	}
	if rest != "" {
		b.WriteString(rest + "\n")
	}
	if b.String() == string(old) {
		return false, nil
	}
	if body == "" && old == nil {
		return false, nil
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return false, fmt.Errorf("creating %s: %w", filepath.Dir(path), err)
	}
	mode := os.FileMode(0o600)
	if fi, err := os.Stat(path); err == nil {
		mode = fi.Mode().Perm()
	}
	if err := fsatomic.WriteFile(path, []byte(b.String()), mode); err != nil {
		return false, err
	}
	return true, nil
}
