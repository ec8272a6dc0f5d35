package daemon

import (
	"archive/tar"
	"bytes"
	"context"
	"encoding/pem"
	"fmt"
	"io"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/bangerdev/banger/internal/agentclient"
	"github.com/bangerdev/banger/internal/agentproto"
	"github.com/bangerdev/banger/internal/api"
	"github.com/bangerdev/banger/internal/config"
	"github.com/bangerdev/banger/internal/model"
)

// Where guest_ca_certs go in the guest. update-ca-certificates (Debian,
// Ubuntu, Alpine) picks up *.crt under the local directory; the staging
// directory holds *.pem so that it never does.
const (
	guestCADir     = "/usr/local/share/ca-certificates/banger"
	guestCAStaging = "/usr/local/share/ca-certificates/.banger.staging"
	guestCABundle  = "/etc/ssl/certs/ca-certificates.crt"
	// guestCATimeout bounds the whole install (update-ca-certificates
	// rehashes every root: seconds under TCG).
	guestCATimeout = 3 * time.Minute
)

// guestCAScript moves the staged certificates into guestCADir (removing
// ones no longer configured) and runs update-ca-certificates when it
// exists and something changed (or the last run did not finish). Its
// first output line says what it did; the trust bundle, when there is
// one, follows, so the daemon can append what is still missing from it.
// Its arguments are the staging directory, guestCADir and the bundle.
const guestCAScript = `set -u
s=$1 d=$2 b=$3
mkdir -p "$d" || exit 1
changed=0
for f in "$d"/*.crt; do
	[ -e "$f" ] || continue
	n=${f##*/}
	[ -e "$s/${n%.crt}.pem" ] || { rm -f "$f" || exit 1; changed=1; }
done
for f in "$s"/*.pem; do
	[ -e "$f" ] || continue
	n=${f##*/}; n=${n%.pem}.crt
	cmp -s "$f" "$d/$n" 2>/dev/null || { cp "$f" "$d/$n" && chmod 644 "$d/$n" || exit 1; changed=1; }
done
rm -rf "$s"
st=no-tool
if command -v update-ca-certificates >/dev/null 2>&1; then
	st=unchanged
	if [ $changed = 1 ] || [ ! -e "$d/.updated" ]; then
		rm -f "$d/.updated"
		update-ca-certificates >&2 || exit 1
		: > "$d/.updated"
		st=updated
	fi
fi
echo "$st"
[ -f "$b" ] && cat "$b"
exit 0
`

// guestCACert is one certificate as installed in the guest.
type guestCACert struct {
	Name string // file name in guestCADir, without .crt
	DER  []byte
}

// guestCACerts reads the configured guest_ca_certs files (again, so that
// an edited file takes effect at the next start) and names one guest file
// per certificate after its host file: corp.crt gives corp.crt, a bundle
// corp.pem of three gives corp-1.crt … corp-3.crt. One certificate per
// file, because OpenSSL's hashed directory lookup skips files with more.
func guestCACerts(paths []string) ([]guestCACert, error) {
	var out []guestCACert
	used := map[string]bool{}
	for _, p := range paths {
		ders, err := config.ReadCACerts(p)
		if err != nil {
			return nil, err
		}
		base := caFileName(p)
		for i := 2; used[base]; i++ {
			base = caFileName(p) + "-" + strconv.Itoa(i)
		}
		used[base] = true
		for i, der := range ders {
			name := base
			if len(ders) > 1 {
				name = base + "-" + strconv.Itoa(i+1)
			}
			out = append(out, guestCACert{Name: name, DER: der})
		}
	}
	return out, nil
}

// caFileName derives a guest file name from a host path: the base name
// without its extension, restricted to [A-Za-z0-9._-].
func caFileName(p string) string {
	n := strings.TrimSuffix(filepath.Base(p), filepath.Ext(p))
	n = strings.Map(func(r rune) rune {
		switch {
		case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r >= '0' && r <= '9', r == '.', r == '_', r == '-':
			return r
		}
		return '-'
	}, n)
	n = strings.Trim(strings.TrimLeft(n, ".-"), "-")
	if n == "" {
		n = "ca"
	}
	return n
}

// installGuestCACerts makes a freshly started VM trust guest_ca_certs.
// It does nothing when none are configured. A failure is a warning (log
// and progress event): the VM runs without the extra trust. Build VMs of
// `image build` do not pass through here (they boot through
// imagebuild.VMRunner), so nothing is baked into built images.
func (d *Daemon) installGuestCACerts(ctx context.Context, vm *model.VM, rt *vmRuntime, emit func(api.Event)) {
	if len(d.cfg.GuestCACerts) == 0 {
		return
	}
	emit(api.Event{Stage: "cacerts", Message: "installing CA certificates"})
	start := time.Now()
	ctx, cancel := context.WithTimeout(ctx, guestCATimeout)
	defer cancel()
	status, err := d.installGuestCACertsErr(ctx, rt)
	if err != nil {
		d.log.Warn("guest CA certificates not installed", "vm", vm.Name, "err", err)
		emit(api.Event{Stage: "cacerts", Message: "warning: CA certificates not installed: " + err.Error()})
		return
	}
	d.log.Info("guest CA certificates", "vm", vm.Name, "status", status, "took", time.Since(start).Round(time.Millisecond))
}

func (d *Daemon) installGuestCACertsErr(ctx context.Context, rt *vmRuntime) (string, error) {
	certs, err := guestCACerts(d.cfg.GuestCACerts)
	if err != nil {
		return "", err
	}
	c, err := rt.agentClient(ctx)
	if err != nil {
		return "", err
	}
	var tb bytes.Buffer
	tw := tar.NewWriter(&tb)
	for _, cert := range certs {
		data := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: cert.DER})
		if err := tw.WriteHeader(&tar.Header{Name: cert.Name + ".pem", Mode: 0o644, Size: int64(len(data)),
			Typeflag: tar.TypeReg, ModTime: time.Now()}); err != nil {
			return "", err
		}
		if _, err := tw.Write(data); err != nil {
			return "", err
		}
	}
	if err := tw.Close(); err != nil {
		return "", err
	}
	// A staging directory left by an interrupted install would mix old
	// and new files: PutTar extracts over it, so start from nothing.
	if _, err := guestRun(ctx, c, nil, "rm", "-rf", guestCAStaging); err != nil {
		return "", err
	}
	if _, err := c.PutTar(ctx, guestCAStaging, &tb, agentproto.PutOptions{}); err != nil {
		return "", fmt.Errorf("copying certificates: %w", err)
	}
	out, err := guestRun(ctx, c, nil, "/bin/sh", "-c", guestCAScript, "sh", guestCAStaging, guestCADir, guestCABundle)
	if err != nil {
		return "", err
	}
	status, bundle, _ := strings.Cut(out, "\n")
	switch status {
	case "updated", "unchanged":
	case "no-tool":
		if bundle == "" {
			return "", fmt.Errorf("the guest has neither update-ca-certificates nor %s (certificates left in %s)", guestCABundle, guestCADir)
		}
	default:
		return "", fmt.Errorf("unexpected output of the install script: %q", status)
	}
	if bundle == "" {
		// update-ca-certificates ran but wrote no bundle where we look:
		// trust is whatever the tool set up.
		return status, nil
	}
	missing := missingFromBundle([]byte(bundle), certs)
	if len(missing) == 0 {
		return status, nil
	}
	var add bytes.Buffer
	if !strings.HasSuffix(bundle, "\n") {
		add.WriteByte('\n')
	}
	for _, cert := range missing {
		pem.Encode(&add, &pem.Block{Type: "CERTIFICATE", Bytes: cert.DER})
	}
	if _, err := guestRun(ctx, c, &add, "/bin/sh", "-c", `cat >> "$1"`, "sh", guestCABundle); err != nil {
		return "", fmt.Errorf("appending to %s: %w", guestCABundle, err)
	}
	return status + fmt.Sprintf(", appended %d to %s", len(missing), guestCABundle), nil
}

// missingFromBundle lists the certificates whose DER is in no
// CERTIFICATE block of bundle.
func missingFromBundle(bundle []byte, certs []guestCACert) []guestCACert {
	have := map[string]bool{}
	for rest := bundle; ; {
		var b *pem.Block
		b, rest = pem.Decode(rest)
		if b == nil {
			break
		}
		if b.Type == "CERTIFICATE" {
			have[string(b.Bytes)] = true
		}
	}
	var missing []guestCACert
	for _, c := range certs {
		if !have[string(c.DER)] {
			missing = append(missing, c)
		}
	}
	return missing
}

// guestRun runs argv as root in the guest with a PATH that includes the
// sbin directories, and returns its stdout; a non-zero exit is an error
// carrying the end of its stderr.
func guestRun(ctx context.Context, c *agentclient.Client, stdin io.Reader, argv ...string) (string, error) {
	var out, errb bytes.Buffer
	req := agentproto.ExecRequest{Argv: argv, Cwd: "/",
		Env: []string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"}}
	code, err := c.Exec(ctx, req, stdin, &out, &errb)
	if err != nil {
		return "", fmt.Errorf("running %s in the guest: %w", argv[0], err)
	}
	if code != 0 {
		msg := strings.TrimSpace(errb.String())
		if len(msg) > 500 {
			msg = "…" + msg[len(msg)-500:]
		}
		return "", fmt.Errorf("%s in the guest exited %d: %s", argv[0], code, msg)
	}
	return out.String(), nil
}
