// Package api defines banger's HTTP/JSON API: routes live under /v1 on the
// daemon's unix socket; request and response types are defined here and
// shared by the server and the Go client. Long operations stream NDJSON
// lines (progress events, then a result or an error) on the same call.
package api

import (
	"encoding/json"
	"time"

	"github.com/bangerdev/banger/internal/model"
)

// Prefix is the versioned path prefix of every route.
const Prefix = "/v1"

// Version identifies the API generation; bumped on incompatible changes.
const Version = "1"

// StreamContentType is the media type of streamed responses.
const StreamContentType = "application/x-ndjson"

// Event is a progress report of a long operation.
type Event struct {
	Stage   string `json:"stage"`
	Message string `json:"message,omitempty"`
	Current int64  `json:"current,omitempty"`
	Total   int64  `json:"total,omitempty"`
	Unit    string `json:"unit,omitempty"` // "bytes", "layers", …
}

// StreamLine is one NDJSON line of a streamed response: exactly one field is set.
type StreamLine struct {
	Event  *Event          `json:"event,omitempty"`
	Result json.RawMessage `json:"result,omitempty"`
	Error  *Error          `json:"error,omitempty"`
}

// VersionInfo answers GET /v1/version.
type VersionInfo struct {
	Version    string    `json:"version"`
	API        string    `json:"api"`
	PID        int       `json:"pid"`
	Executable string    `json:"executable"`
	ExeModTime time.Time `json:"exe_mod_time"`
	StartedAt  time.Time `json:"started_at"`
	Socket     string    `json:"socket"`
	StateDir   string    `json:"state_dir"`
	LogFile    string    `json:"log_file"`
	// Busy is how many state-changing requests or sessions (exec, builds,
	// pulls, forwards) are in flight.
	Busy int `json:"busy"`
}

// Health answers GET /v1/health.
type Health struct {
	Status string `json:"status"`
}

// ImagePullRequest is POST /v1/images/pull.
type ImagePullRequest struct {
	Ref        string `json:"ref"`
	Name       string `json:"name,omitempty"`
	KernelRef  string `json:"kernel_ref,omitempty"`
	KernelPath string `json:"kernel_path,omitempty"`
	InitrdPath string `json:"initrd_path,omitempty"`
	ModulesDir string `json:"modules_dir,omitempty"`
	Size       string `json:"size,omitempty"`
}

// ImageRegisterRequest is POST /v1/images/register.
type ImageRegisterRequest struct {
	Name       string `json:"name"`
	RootfsPath string `json:"rootfs_path"`
	KernelRef  string `json:"kernel_ref,omitempty"`
	KernelPath string `json:"kernel_path,omitempty"`
	InitrdPath string `json:"initrd_path,omitempty"`
	ModulesDir string `json:"modules_dir,omitempty"`
}

// CachePruneRequest is POST /v1/images/cache/prune.
type CachePruneRequest struct {
	DryRun bool `json:"dry_run"`
}

// CachePruneResult reports what a prune freed (or would free).
type CachePruneResult struct {
	Dir        string `json:"dir"`
	Blobs      int    `json:"blobs"`
	FreedBytes int64  `json:"freed_bytes"` // blobs and build states together
	// BuildCacheDir, BuildStates and BuildFreedBytes report the `image
	// build` step cache, pruned with the blobs.
	BuildCacheDir   string `json:"build_cache_dir"`
	BuildStates     int    `json:"build_states"`
	BuildFreedBytes int64  `json:"build_freed_bytes"`
	DryRun          bool   `json:"dry_run"`
}

// KernelImportRequest is POST /v1/kernels/import.
type KernelImportRequest struct {
	Name       string `json:"name"`
	FromDeb    string `json:"from_deb,omitempty"`
	Vmlinuz    string `json:"vmlinuz,omitempty"`
	Vmlinux    string `json:"vmlinux,omitempty"`
	Initrd     string `json:"initrd,omitempty"`
	ModulesDir string `json:"modules_dir,omitempty"`
}

// KernelPullRequest is POST /v1/kernels/pull.
type KernelPullRequest struct {
	Name string `json:"name"`
}

// CatalogKernel is one entry of the embedded kernel catalog.
type CatalogKernel struct {
	Name        string `json:"name"`
	Version     string `json:"version,omitempty"`
	Source      string `json:"source"`
	Description string `json:"description,omitempty"`
	Installed   bool   `json:"installed"`
}

// VMCreateRequest is POST /v1/vms.
type VMCreateRequest struct {
	Name      string `json:"name,omitempty"`
	Image     string `json:"image,omitempty"`
	Kernel    string `json:"kernel,omitempty"`
	CPUs      int    `json:"cpus,omitempty"`
	MemoryMiB int    `json:"memory_mib,omitempty"`
	Disk      string `json:"disk,omitempty"`
	VMM       string `json:"vmm,omitempty"`
	Net       string `json:"net,omitempty"`
	NoStart   bool   `json:"no_start,omitempty"`
	// Publish are forwards ("[HOST_ADDR:]HOST_PORT:GUEST_PORT[/udp]").
	Publish     []string `json:"publish,omitempty"`
	AutoForward bool     `json:"auto_forward,omitempty"`
	AllowHosts  []string `json:"allow_hosts,omitempty"`
	AllowCIDRs  []string `json:"allow_cidrs,omitempty"`
}

// VMSetRequest is PATCH /v1/vms/{name}: zero fields are left unchanged.
type VMSetRequest struct {
	CPUs      int    `json:"cpus,omitempty"`
	MemoryMiB int    `json:"memory_mib,omitempty"`
	Disk      string `json:"disk,omitempty"`
}

// VMStopRequest is POST /v1/vms/{name}/stop.
type VMStopRequest struct {
	TimeoutSeconds int `json:"timeout_seconds,omitempty"`
}

// VMKillRequest is POST /v1/vms/{name}/kill.
type VMKillRequest struct {
	Signal string `json:"signal,omitempty"`
}

// VMDeleteRequest is the query of DELETE /v1/vms/{name}.
type VMDeleteRequest struct {
	Force bool `json:"force,omitempty"`
}

// VMInfo is a VM plus derived runtime facts.
type VMInfo struct {
	model.VM
	ConsoleLog string `json:"console_log,omitempty"`
	Emulated   bool   `json:"emulated,omitempty"`
}

// ExecUpgrade is the Upgrade header of POST /v1/vms/{name}/exec: after the
// 101 response the connection carries agentproto exec frames.
const ExecUpgrade = "banger-exec"
