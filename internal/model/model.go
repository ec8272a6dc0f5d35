// Package model holds banger's domain types: images, kernels and VMs, as
// stored in the database and returned by the API.
package model

import (
	"fmt"
	"regexp"
	"time"

	"github.com/bangerdev/banger/internal/errkind"
)

// ImageConfig is the part of an OCI image config that commands run in the
// image's VMs inherit, as they would in a container.
type ImageConfig struct {
	Env        []string          `json:"env,omitempty"`
	WorkingDir string            `json:"working_dir,omitempty"`
	User       string            `json:"user,omitempty"`
	Entrypoint []string          `json:"entrypoint,omitempty"`
	Cmd        []string          `json:"cmd,omitempty"`
	Labels     map[string]string `json:"labels,omitempty"`
}

// Image is a bootable root filesystem plus its kernel.
type Image struct {
	ID             string      `json:"id"`
	Name           string      `json:"name"`
	Managed        bool        `json:"managed"`
	RootfsPath     string      `json:"rootfs_path"`
	KernelRef      string      `json:"kernel_ref,omitempty"`
	KernelPath     string      `json:"kernel_path,omitempty"`
	InitrdPath     string      `json:"initrd_path,omitempty"`
	ModulesDir     string      `json:"modules_dir,omitempty"`
	SourceRef      string      `json:"source_ref,omitempty"`
	ManifestDigest string      `json:"manifest_digest,omitempty"`
	Config         ImageConfig `json:"config"`
	SizeBytes      int64       `json:"size_bytes"`
	InitMode       string      `json:"init_mode,omitempty"`
	CreatedAt      time.Time   `json:"created_at"`
	// BuildLog is the log of `image build`, for built images (not stored).
	BuildLog string `json:"build_log,omitempty"`
}

// Kernel is a managed kernel artifact.
type Kernel struct {
	Name       string    `json:"name"`
	Version    string    `json:"version"`
	SHA256     string    `json:"sha256"`
	Source     string    `json:"source"`
	Dir        string    `json:"dir"`
	ImportedAt time.Time `json:"imported_at"`
}

// VM states.
const (
	StateCreated  = "created"
	StateStarting = "starting"
	StateRunning  = "running"
	StateStopping = "stopping"
	StateStopped  = "stopped"
	StateError    = "error"
)

// VM is a microVM and everything needed to tear it down after a crash.
type VM struct {
	ID        string    `json:"id"`
	Name      string    `json:"name"`
	ImageID   string    `json:"image_id"`
	ImageName string    `json:"image"`
	KernelRef string    `json:"kernel,omitempty"`
	State     string    `json:"state"`
	LastError string    `json:"last_error,omitempty"`
	CPUs      int       `json:"cpus"`
	MemoryMiB int       `json:"memory_mib"`
	DiskBytes int64     `json:"disk_bytes"`
	VMM       string    `json:"vmm"`
	Accel     string    `json:"accel,omitempty"`
	Dir       string    `json:"dir"`
	RunDir    string    `json:"run_dir"`
	Identity  string    `json:"-"` // VMM process identity (JSON), for re-adoption
	Network   VMNetwork `json:"network"`
	Workspace Workspace `json:"workspace,omitempty"`
	CreatedAt time.Time `json:"created_at"`
	UpdatedAt time.Time `json:"updated_at"`
}

// VMNetwork is a VM's network identity; empty Mode means none.
type VMNetwork struct {
	Mode string `json:"mode,omitempty"`
	IP   string `json:"ip,omitempty"`
	Tap  string `json:"tap,omitempty"` // set while the VM runs
	MAC  string `json:"mac,omitempty"`
	// AllowHosts and AllowCIDRs restrict egress (nat mode) to these names
	// (and their subdomains) and ranges when either is set.
	AllowHosts []string `json:"allow_hosts,omitempty"`
	AllowCIDRs []string `json:"allow_cidrs,omitempty"`
	// AutoForward forwards the guest's listening TCP ports to the same
	// localhost ports while the VM runs.
	AutoForward bool `json:"auto_forward,omitempty"`
	// Forwards are host→guest port forwards: the requested ones (kept
	// across restarts) and, with Auto set, the automatic ones active now.
	Forwards []Forward `json:"forwards,omitempty"`
}

// Forward is a host port forwarded to a guest port over the agent channel.
type Forward struct {
	Proto     string `json:"proto"` // tcp or udp
	HostAddr  string `json:"host_addr"`
	HostPort  int    `json:"host_port"`
	GuestPort int    `json:"guest_port"`
	Auto      bool   `json:"auto,omitempty"`
}

// Workspace records a host directory copied into a VM.
type Workspace struct {
	HostPath  string `json:"host_path,omitempty"`
	GuestPath string `json:"guest_path,omitempty"`
	Head      string `json:"head,omitempty"`
}

var nameRE = regexp.MustCompile(`^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$`)

// ValidateName checks that n is a DNS label (used for VM names, which become
// hostnames and <name>.vm records).
func ValidateName(kind, n string) error {
	if !nameRE.MatchString(n) {
		return errkind.New(errkind.InvalidArgument,
			"%s name %q is not a DNS label (lowercase letters, digits and '-', 1-63 chars, no leading or trailing '-')", kind, n)
	}
	return nil
}

var imageNameRE = regexp.MustCompile(`^[a-z0-9]([a-z0-9._-]{0,62}[a-z0-9])?$`)

// ValidateImageName checks image and kernel names (DNS-label-like, dots allowed).
func ValidateImageName(kind, n string) error {
	if !imageNameRE.MatchString(n) {
		return errkind.New(errkind.InvalidArgument,
			"%s name %q is invalid: use lowercase letters, digits, '.', '_' and '-' (1-64 chars)", kind, n)
	}
	return nil
}

// FormatBytes renders a byte count for humans (binary units).
func FormatBytes(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTPE"[exp])
}
