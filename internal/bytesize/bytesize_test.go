package bytesize

import (
	"errors"
	"testing"

	"github.com/bangerdev/banger/internal/errkind"
)

func TestParse(t *testing.T) {
	tests := []struct {
		in   string
		want int64
	}{
		{"100", 100 * MiB},
		{"4G", 4 * GiB},
		{"4GiB", 4 * GiB},
		{"4gb", 4 * GiB},
		{"512M", 512 * MiB},
		{"512MiB", 512 * MiB},
		{"64k", 64 * KiB},
		{"1T", TiB},
		{"4096B", 4096},
		{" 2 G ", 2 * GiB},
		{"1.5G", 3 * GiB / 2},
	}
	for _, tt := range tests {
		got, err := Parse(tt.in)
		if err != nil {
			t.Errorf("Parse(%q): %v", tt.in, err)
			continue
		}
		if got != tt.want {
			t.Errorf("Parse(%q) = %d, want %d", tt.in, got, tt.want)
		}
	}
}

func TestParseInvalid(t *testing.T) {
	for _, in := range []string{"", "G", "-1", "0", "4X", "4 GiBs", "1.2.3M", "99999999999999T", "abc"} {
		_, err := Parse(in)
		if err == nil {
			t.Errorf("Parse(%q) succeeded, want error", in)
			continue
		}
		if !errors.Is(err, errkind.InvalidArgument) {
			t.Errorf("Parse(%q) error %v is not InvalidArgument", in, err)
		}
	}
}

func TestFormat(t *testing.T) {
	tests := map[int64]string{17: "17 B", 2 * KiB: "2.0 KiB", 3 * GiB / 2: "1.5 GiB", 512 * MiB: "512.0 MiB", 2 * TiB: "2.0 TiB"}
	for n, want := range tests {
		if got := Format(n); got != want {
			t.Errorf("Format(%d) = %q, want %q", n, got, want)
		}
	}
}
