package imagepull

import (
	"net"
	"strings"

	"github.com/google/go-containerregistry/pkg/name"

	"github.com/bangerdev/banger/internal/errkind"
)

// ParseRef parses an OCI image reference ("debian:bookworm",
// "ghcr.io/org/tool:v1.2", "host:5000/x@sha256:…"). Short names resolve
// against Docker Hub. Plain HTTP is allowed only for loopback registries
// (localhost, 127.0.0.0/8, [::1]) and for the registries listed in insecure
// (host or host:port); everything else must speak HTTPS (see also
// Options.Insecure, which the pull transport enforces).
func ParseRef(ref string, insecure []string) (name.Reference, error) {
	s := strings.TrimSpace(ref)
	if s == "" {
		return nil, errkind.New(errkind.InvalidArgument, "image reference is empty")
	}
	r, err := name.ParseReference(s)
	if err != nil {
		return nil, errkind.Wrap(errkind.InvalidArgument, err, "invalid image reference %q", ref)
	}
	if PlainHTTPAllowed(r.Context().RegistryStr(), insecure) {
		r, err = name.ParseReference(s, name.Insecure)
		if err != nil {
			return nil, errkind.Wrap(errkind.InvalidArgument, err, "invalid image reference %q", ref)
		}
	}
	return r, nil
}

// PlainHTTPAllowed reports whether the registry host (with optional port)
// may be reached over plain HTTP: loopback hosts always, others only when
// listed in insecure (either as "host" or as "host:port").
func PlainHTTPAllowed(registry string, insecure []string) bool {
	host := registry
	if h, _, err := net.SplitHostPort(registry); err == nil {
		host = h
	}
	host = strings.TrimSuffix(strings.TrimPrefix(host, "["), "]")
	if strings.EqualFold(host, "localhost") {
		return true
	}
	if ip := net.ParseIP(host); ip != nil && ip.IsLoopback() {
		return true
	}
	for _, in := range insecure {
		in = strings.TrimSpace(in)
		if in == "" {
			continue
		}
		if strings.EqualFold(in, registry) || strings.EqualFold(in, host) {
			return true
		}
	}
	return false
}

// maxNameLen bounds default names (a DNS label).
const maxNameLen = 63

// DefaultName derives a friendly image name from a reference:
//
//	debian:bookworm            → debian-bookworm
//	docker.io/library/debian   → debian
//	ghcr.io/org/tool:v1.2      → tool-v1.2
//	repo@sha256:0123456789ab…  → repo-0123456789ab
//
// The result is lowercase, uses only [a-z0-9.-], starts and ends with a
// letter or digit and is at most 63 characters long.
func DefaultName(ref string) (string, error) {
	r, err := ParseRef(ref, nil)
	if err != nil {
		return "", err
	}
	repo := r.Context().RepositoryStr()
	base := repo[strings.LastIndex(repo, "/")+1:]
	suffix := ""
	switch v := r.(type) {
	case name.Digest:
		hex := v.DigestStr()
		if i := strings.IndexByte(hex, ':'); i >= 0 {
			hex = hex[i+1:]
		}
		if len(hex) > 12 {
			hex = hex[:12]
		}
		suffix = hex
	case name.Tag:
		// ":latest" names the default tag: "busybox:latest" → "busybox".
		if explicitTag(ref) && v.TagStr() != "latest" {
			suffix = v.TagStr()
		}
	}
	n := sanitize(base)
	if s := sanitize(suffix); s != "" {
		n = sanitize(n + "-" + s)
	}
	if n == "" {
		return "", errkind.New(errkind.InvalidArgument, "cannot derive an image name from %q; pass a name", ref)
	}
	return n, nil
}

// explicitTag reports whether ref spells a tag (":tag" after the last "/").
func explicitTag(ref string) bool {
	s := strings.TrimSpace(ref)
	if i := strings.IndexByte(s, '@'); i >= 0 {
		s = s[:i]
	}
	return strings.Contains(s[strings.LastIndexByte(s, '/')+1:], ":")
}

// sanitize maps s onto [a-z0-9.-], collapsing runs of separators, trimming
// them at both ends, and cutting to maxNameLen.
func sanitize(s string) string {
	var b strings.Builder
	prevSep := true // drop leading separators
	for _, c := range strings.ToLower(s) {
		switch {
		case c >= 'a' && c <= 'z', c >= '0' && c <= '9':
			b.WriteRune(c)
			prevSep = false
		case c == '.' && !prevSep:
			b.WriteRune(c)
			prevSep = true
		case !prevSep:
			b.WriteByte('-')
			prevSep = true
		}
	}
	out := b.String()
	if len(out) > maxNameLen {
		out = out[:maxNameLen]
	}
	return strings.TrimRight(out, "-.")
}
