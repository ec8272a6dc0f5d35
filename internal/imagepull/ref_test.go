package imagepull

import (
	"errors"
	"strings"
	"testing"

	"github.com/bangerdev/banger/internal/errkind"
)

func TestDefaultName(t *testing.T) {
	long := strings.Repeat("a", 70)
	tests := []struct{ ref, want string }{
		{"debian:bookworm", "debian-bookworm"},
		{"debian", "debian"},
		{"docker.io/library/debian", "debian"},
		{"docker.io/library/debian:latest", "debian"},
		{"ghcr.io/org/tool:v1.2", "tool-v1.2"},
		{"localhost:5000/min", "min"},
		{"127.0.0.1:5000/a/b/busy_box:1.36_musl", "busy-box-1.36-musl"},
		{"ubuntu@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef", "ubuntu-0123456789ab"},
		{"ubuntu:22.04@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef", "ubuntu-0123456789ab"},
		{"quay.io/x/" + long + ":tag", strings.Repeat("a", 63)},
		{"quay.io/x/img:" + strings.Repeat("b", 60), "img-" + strings.Repeat("b", 59)},
		{"reg.example/ns/my__image:_v", "my-image-v"},
	}
	for _, tt := range tests {
		got, err := DefaultName(tt.ref)
		if err != nil {
			t.Errorf("DefaultName(%q): %v", tt.ref, err)
			continue
		}
		if got != tt.want {
			t.Errorf("DefaultName(%q) = %q, want %q", tt.ref, got, tt.want)
		}
		if len(got) > 63 || strings.Trim(got, "abcdefghijklmnopqrstuvwxyz0123456789.-") != "" {
			t.Errorf("DefaultName(%q) = %q is not a DNS-label-like name", tt.ref, got)
		}
	}
}

func TestParseRefInvalid(t *testing.T) {
	for _, ref := range []string{"", "  ", "UPPER/Case:tag", "debian:bad tag", "a@sha256:xyz", "http://debian"} {
		_, err := ParseRef(ref, nil)
		if err == nil {
			t.Errorf("ParseRef(%q) succeeded", ref)
			continue
		}
		if !errors.Is(err, errkind.InvalidArgument) {
			t.Errorf("ParseRef(%q): %v is not InvalidArgument", ref, err)
		}
	}
}

func TestParseRefScheme(t *testing.T) {
	tests := []struct {
		ref      string
		insecure []string
		scheme   string
	}{
		{"127.0.0.1:5000/x", nil, "http"},
		{"127.5.6.7:5000/x", nil, "http"},
		{"localhost:5000/x", nil, "http"},
		{"[::1]:5000/x", nil, "http"},
		{"debian", nil, "https"},
		{"registry.lan:5000/x", nil, "https"},
		{"registry.lan:5000/x", []string{"registry.lan"}, "http"},
		{"registry.lan:5000/x", []string{"registry.lan:5000"}, "http"},
		{"registry.lan:5000/x", []string{"registry.lan:5001"}, "https"},
	}
	for _, tt := range tests {
		r, err := ParseRef(tt.ref, tt.insecure)
		if err != nil {
			t.Errorf("ParseRef(%q): %v", tt.ref, err)
			continue
		}
		if got := r.Context().Registry.Scheme(); got != tt.scheme {
			t.Errorf("ParseRef(%q, %v) scheme %s, want %s", tt.ref, tt.insecure, got, tt.scheme)
		}
	}
	// ggcr would use plain HTTP for private addresses on its own; the
	// policy refuses that unless listed.
	if PlainHTTPAllowed("10.0.0.5:5000", nil) || PlainHTTPAllowed("192.168.1.2", nil) {
		t.Error("private registry allowed over plain HTTP without being listed")
	}
}
