package agent

import (
	"fmt"
	"os"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/bangerdev/banger/internal/errkind"
)

// identity is who an exec runs as.
type identity struct {
	Name   string
	UID    uint32
	GID    uint32
	Groups []uint32
	Home   string
	Shell  string
}

// resolveUser parses "name", "uid", "name:group" or "uid:gid" (empty means
// root) using the guest's /etc/passwd and /etc/group.
func resolveUser(spec string) (identity, error) {
	if spec == "" {
		spec = "0"
	}
	userPart, groupPart, hasGroup := strings.Cut(spec, ":")
	var id identity
	var u *user.User
	if n, err := strconv.ParseUint(userPart, 10, 32); err == nil {
		id.UID = uint32(n)
		u, _ = user.LookupId(userPart)
		if u == nil {
			id.GID = id.UID
			id.Name = userPart
			id.Home = "/"
			if n == 0 {
				id.Name, id.Home = "root", "/root"
			}
		}
	} else {
		var err error
		u, err = user.Lookup(userPart)
		if err != nil {
			return identity{}, errkind.New(errkind.NotFound, "user %q not found in the guest", userPart)
		}
	}
	if u != nil {
		uid, err1 := strconv.ParseUint(u.Uid, 10, 32)
		gid, err2 := strconv.ParseUint(u.Gid, 10, 32)
		if err1 != nil || err2 != nil {
			return identity{}, errkind.New(errkind.InvalidArgument, "user %q has a non-numeric uid/gid", userPart)
		}
		id.UID, id.GID, id.Name, id.Home = uint32(uid), uint32(gid), u.Username, u.HomeDir
		if gids, err := u.GroupIds(); err == nil {
			for _, g := range gids {
				if n, err := strconv.ParseUint(g, 10, 32); err == nil {
					id.Groups = append(id.Groups, uint32(n))
				}
			}
		}
	}
	if hasGroup {
		if n, err := strconv.ParseUint(groupPart, 10, 32); err == nil {
			id.GID = uint32(n)
		} else {
			g, err := user.LookupGroup(groupPart)
			if err != nil {
				return identity{}, errkind.New(errkind.NotFound, "group %q not found in the guest", groupPart)
			}
			n, err := strconv.ParseUint(g.Gid, 10, 32)
			if err != nil {
				return identity{}, errkind.New(errkind.InvalidArgument, "group %q has a non-numeric gid", groupPart)
			}
			id.GID = uint32(n)
		}
		id.Groups = nil
	}
	id.Shell = loginShell(id.Name)
	return id, nil
}

// loginShell reads the user's shell from /etc/passwd (os/user does not
// expose it), falling back to /bin/sh.
func loginShell(name string) string {
	data, err := os.ReadFile("/etc/passwd")
	if err == nil {
		for _, line := range strings.Split(string(data), "\n") {
			f := strings.Split(line, ":")
			if len(f) >= 7 && f[0] == name && f[6] != "" {
				if _, err := os.Stat(f[6]); err == nil {
					return f[6]
				}
			}
		}
	}
	return "/bin/sh"
}

const defaultPath = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

// buildEnv returns the default environment for id, overridden by extra.
func buildEnv(id identity, tty bool, extra []string) []string {
	env := []string{
		"PATH=" + defaultPath,
		"HOME=" + id.Home,
		"USER=" + id.Name,
		"LOGNAME=" + id.Name,
		"SHELL=" + id.Shell,
	}
	if tty {
		env = append(env, "TERM=xterm-256color")
	}
	if _, err := os.Stat("/usr/lib/locale/C.utf8"); err == nil {
		env = append(env, "LANG=C.UTF-8")
	}
	for _, kv := range extra {
		k, _, ok := strings.Cut(kv, "=")
		if !ok || k == "" {
			continue
		}
		replaced := false
		for i, old := range env {
			if strings.HasPrefix(old, k+"=") {
				env[i], replaced = kv, true
				break
			}
		}
		if !replaced {
			env = append(env, kv)
		}
	}
	return env
}

func envValue(env []string, key string) string {
	for i := len(env) - 1; i >= 0; i-- {
		if v, ok := strings.CutPrefix(env[i], key+"="); ok {
			return v
		}
	}
	return ""
}

// lookPath resolves name against the child's PATH (not the agent's).
func lookPath(name, path, cwd string) (string, error) {
	if strings.Contains(name, "/") {
		p := name
		if !filepath.IsAbs(p) {
			p = filepath.Join(cwd, p)
		}
		if err := checkExecutable(p); err != nil {
			return "", err
		}
		return p, nil
	}
	for _, dir := range filepath.SplitList(path) {
		if dir == "" {
			dir = "."
		}
		if !filepath.IsAbs(dir) {
			dir = filepath.Join(cwd, dir)
		}
		p := filepath.Join(dir, name)
		if checkExecutable(p) == nil {
			return p, nil
		}
	}
	return "", errkind.New(errkind.NotFound, "executable %q not found in PATH", name)
}

func checkExecutable(p string) error {
	fi, err := os.Stat(p)
	if err != nil {
		return errkind.New(errkind.NotFound, "executable %q not found", p)
	}
	if fi.IsDir() || fi.Mode().Perm()&0o111 == 0 {
		return errkind.New(errkind.InvalidArgument, "%q is not executable", p)
	}
	return nil
}

func dirExists(p string) bool {
	fi, err := os.Stat(p)
	return err == nil && fi.IsDir()
}

func describeIdentity(id identity) string {
	return fmt.Sprintf("%s(%d:%d)", id.Name, id.UID, id.GID)
}
