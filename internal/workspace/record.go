package workspace

import (
	"net/url"
	"strconv"
	"time"
)

// TarContentType is the media type of the file and workspace routes' tar bodies.
const TarContentType = "application/x-tar"

// TarErrorTrailer is the HTTP trailer carrying an error that happened
// after a tar stream from the daemon began.
const TarErrorTrailer = "Banger-Error"

// Record describes a workspace copied into a VM: what the daemon keeps
// (the VM row holds HostPath, GuestPath and Head; the rest lives next to
// the VM's disks) and what the workspace routes exchange.
type Record struct {
	HostPath  string `json:"host_path"`
	GuestPath string `json:"guest_path"`
	// Head is the host repository's HEAD when the copy was made; Base is
	// the commit whose tree equals what was copied (HEAD, or a snapshot
	// commit on top of it holding uncommitted changes). Both are empty for
	// plain directories.
	Head string `json:"head,omitempty"`
	Base string `json:"base,omitempty"`
	// RepoRoot and Prefix locate HostPath in its repository.
	RepoRoot         string    `json:"repo_root,omitempty"`
	Prefix           string    `json:"prefix,omitempty"`
	Kind             Kind      `json:"kind,omitempty"`
	Mode             Mode      `json:"mode,omitempty"`
	IncludeUntracked bool      `json:"include_untracked,omitempty"`
	Entries          int       `json:"entries,omitempty"`
	Bytes            int64     `json:"bytes,omitempty"`
	PreparedAt       time.Time `json:"prepared_at,omitzero"`
}

// Record returns the record of a copy of this plan to guestPath.
func (p *Plan) Record(guestPath, base string) Record {
	return Record{
		HostPath: p.Root, GuestPath: guestPath, Head: p.Head, Base: base,
		RepoRoot: p.RepoRoot, Prefix: p.Prefix, Kind: p.Kind, Mode: p.Mode,
		IncludeUntracked: p.IncludeUntracked,
	}
}

// Query encodes the record's identifying fields as URL query parameters
// (the workspace upload route takes them next to its tar body).
func (r Record) Query() url.Values {
	q := url.Values{}
	set := func(k, v string) {
		if v != "" {
			q.Set(k, v)
		}
	}
	set("host_path", r.HostPath)
	set("guest_path", r.GuestPath)
	set("head", r.Head)
	set("base", r.Base)
	set("repo_root", r.RepoRoot)
	set("prefix", r.Prefix)
	set("kind", string(r.Kind))
	set("mode", string(r.Mode))
	if r.IncludeUntracked {
		q.Set("include_untracked", "true")
	}
	return q
}

// RecordFromQuery is the inverse of Record.Query.
func RecordFromQuery(q url.Values) Record {
	inc, _ := strconv.ParseBool(q.Get("include_untracked"))
	return Record{
		HostPath: q.Get("host_path"), GuestPath: q.Get("guest_path"),
		Head: q.Get("head"), Base: q.Get("base"),
		RepoRoot: q.Get("repo_root"), Prefix: q.Get("prefix"),
		Kind: Kind(q.Get("kind")), Mode: Mode(q.Get("mode")),
		IncludeUntracked: inc,
	}
}
