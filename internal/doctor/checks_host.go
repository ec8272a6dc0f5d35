package doctor

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"strconv"
	"strings"
	"syscall"

	"github.com/bangerdev/banger/internal/errkind"
)

const pvmDetail = "PVM: stock kernels will not boot under it; QEMU falls back to TCG (emulated, slow); Firecracker cannot run here"

func checkArch(_ context.Context, e *env) Check {
	switch e.machine {
	case "x86_64":
		return Check{Status: Pass, Detail: "x86_64"}
	case "aarch64", "arm64":
		return Check{Status: Warn, Detail: e.machine + ": untested; banger is developed and tested on x86_64"}
	case "":
		return Check{Status: Fail, Detail: "cannot determine the machine architecture"}
	default:
		return Check{Status: Fail, Detail: e.machine + ": unsupported architecture", Hint: "banger runs on x86_64 hosts"}
	}
}

func enableKVMHint(flag string) string {
	if flag != "" {
		return "load the KVM module: modprobe " + kvmModuleFor(flag)
	}
	return "enable hardware virtualization (VT-x/AMD-V) in the firmware, or nested virtualization in the hypervisor"
}

func checkKVMDevice(_ context.Context, e *env) Check {
	if !e.kvm.Device {
		return Check{Status: Warn,
			Detail: "/dev/kvm not found: guests run under QEMU TCG (emulated, slow)",
			Hint:   enableKVMHint(e.kvm.CPUFlag)}
	}
	if err := e.probes.OpenReadWrite("/dev/kvm"); err != nil {
		c := Check{Status: Warn, Detail: fmt.Sprintf("opening /dev/kvm read-write: %v", err)}
		if errors.Is(err, fs.ErrPermission) {
			c.Hint = "add your user to the kvm group: sudo usermod -aG kvm $USER, then log in again"
		}
		return c
	}
	return Check{Status: Pass, Detail: "/dev/kvm opens read-write"}
}

func checkKVMKind(_ context.Context, e *env) Check {
	k := e.kvm
	switch k.Kind {
	case KVMHardware:
		detail := "hardware KVM"
		var parts []string
		if k.CPUFlag != "" {
			parts = append(parts, k.CPUFlag)
		}
		if k.Module != "" {
			parts = append(parts, k.Module)
		}
		if len(parts) > 0 {
			detail += " (" + strings.Join(parts, ", ") + ")"
		}
		return Check{Status: Pass, Detail: detail}
	case KVMPVM:
		return Check{Status: Warn, Detail: pvmDetail,
			Hint: "for fast guests use a host with hardware virtualization (vmx/svm)"}
	default:
		return Check{Status: Warn,
			Detail: "no KVM: QEMU falls back to TCG (emulated, slow); Firecracker cannot run here",
			Hint:   enableKVMHint(k.CPUFlag)}
	}
}

func checkTun(_ context.Context, e *env) Check {
	if e.probes.Exists("/dev/net/tun") {
		return Check{Status: Pass, Detail: "/dev/net/tun present"}
	}
	return Check{Status: Warn,
		Detail: "/dev/net/tun missing: tap networking is unavailable (--net none still works)",
		Hint:   "modprobe tun"}
}

func checkNftables(ctx context.Context, e *env) Check {
	n, err := e.probes.Nftables(ctx)
	switch {
	case err == nil:
		return Check{Status: Pass, Detail: fmt.Sprintf("nf_tables answers over netlink (%d tables)", n)}
	case errors.Is(err, syscall.EPERM):
		return Check{Status: Warn,
			Detail: "cannot query nf_tables without CAP_NET_ADMIN",
			Hint:   "run banger doctor as root to check NAT support"}
	default:
		return Check{Status: Warn,
			Detail: fmt.Sprintf("nf_tables unavailable (%v): NAT and egress rules will not work", err),
			Hint:   "modprobe nf_tables (the kernel needs CONFIG_NF_TABLES)"}
	}
}

// capNetAdmin is the CAP_NET_ADMIN bit (linux/capability.h).
const capNetAdmin = 12

func checkPrivileges(_ context.Context, e *env) Check {
	if uid := e.probes.Geteuid(); uid == 0 {
		return Check{Status: Pass, Detail: "running as root"}
	}
	status, err := e.probes.ReadFile("/proc/self/status")
	if err == nil {
		var has bool
		has, err = hasEffectiveCap(string(status), capNetAdmin)
		if err == nil && has {
			return Check{Status: Pass, Detail: "CAP_NET_ADMIN is effective"}
		}
	}
	detail := "not root and no CAP_NET_ADMIN: bridge, tap and NAT networking need it"
	if err != nil {
		detail = fmt.Sprintf("not root, and capabilities are unknown (%v): bridge, tap and NAT networking need CAP_NET_ADMIN", err)
	}
	return Check{Status: Warn, Detail: detail,
		Hint: "run bangerd as root (banger system install), or use --net none"}
}

// hasEffectiveCap reads the CapEff line of a /proc/<pid>/status text and
// reports whether capability bit is set.
func hasEffectiveCap(status string, bit uint) (bool, error) {
	for line := range strings.Lines(status) {
		value, ok := strings.CutPrefix(line, "CapEff:")
		if !ok {
			continue
		}
		mask, err := strconv.ParseUint(strings.TrimSpace(value), 16, 64)
		if err != nil {
			return false, fmt.Errorf("parsing CapEff: %w", err)
		}
		return mask&(1<<bit) != 0, nil
	}
	return false, errors.New("no CapEff line in process status")
}

func checkStore(ctx context.Context, e *env) Check {
	err := e.opts.StoreCheck(ctx)
	switch {
	case err == nil:
		return Check{Status: Pass, Detail: "state database opens read-only"}
	case errors.Is(err, errkind.NotFound) || errors.Is(err, fs.ErrNotExist):
		return Check{Status: Warn, Detail: fmt.Sprintf("no state database yet: %v", err),
			Hint: "bangerd creates it when it first starts"}
	default:
		hint := errkind.Hint(err)
		if hint == "" {
			hint = "check that this user can read the state dir"
		}
		return Check{Status: Fail, Detail: fmt.Sprintf("state database: %v", err), Hint: hint}
	}
}

func checkDisk(label, dir string) func(context.Context, *env) Check {
	return func(_ context.Context, e *env) Check {
		free, err := e.probes.FreeBytes(dir)
		if err != nil {
			return Check{Status: Warn, Detail: fmt.Sprintf("free space in %s dir %s unknown: %v", label, dir, err)}
		}
		detail := fmt.Sprintf("%s free in %s dir %s", formatBytes(free), label, dir)
		switch {
		case free < DiskFailBytes:
			return Check{Status: Fail, Detail: detail + " (need at least 1 GiB)",
				Hint: "free disk space, or point banger at a larger filesystem"}
		case free < DiskWarnBytes:
			return Check{Status: Warn, Detail: detail + " (images and VM disks need 5 GiB or more)",
				Hint: "free disk space, e.g. banger image cache prune"}
		default:
			return Check{Status: Pass, Detail: detail}
		}
	}
}

// formatBytes renders n in binary units with one decimal ("12.3 GiB").
func formatBytes(n uint64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := uint64(unit), 0
	for m := n / unit; m >= unit && exp < 4; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTP"[exp])
}
