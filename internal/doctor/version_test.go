package doctor

import (
	"strings"
	"testing"
)

func TestParseVersion(t *testing.T) {
	tests := []struct {
		in      string
		want    Version
		wantErr bool
	}{
		{in: "1.47.0", want: Version{1, 47, 0}},
		{in: "v1.14.2", want: Version{1, 14, 2}},
		{in: "7.2", want: Version{7, 2, 0}},
		{in: "9", want: Version{9, 0, 0}},
		{in: " 1.47.1-rc2 ", want: Version{1, 47, 1}},
		{in: "1.2.3.4", want: Version{1, 2, 3}}, // a fourth component is ignored
		{in: "7.2+dfsg", want: Version{7, 2, 0}},
		{in: "", wantErr: true},
		{in: "v", wantErr: true},
		{in: "x1.2", wantErr: true},
		{in: "1.x.2", wantErr: true},
		{in: "1rc.2", wantErr: true},
		{in: "1..2", wantErr: true},
		{in: "99999999999999999999.1", wantErr: true},
	}
	for _, tt := range tests {
		got, err := ParseVersion(tt.in)
		if tt.wantErr {
			if err == nil {
				t.Errorf("ParseVersion(%q) = %v, want error", tt.in, got)
			}
			continue
		}
		if err != nil || got != tt.want {
			t.Errorf("ParseVersion(%q) = %v, %v; want %v", tt.in, got, err, tt.want)
		}
	}
}

func TestVersionCompare(t *testing.T) {
	tests := []struct {
		a, b string
		want int
	}{
		{"1.8.0", "1.8.0", 0},
		{"1.8", "1.8.0", 0},
		{"1.7.0", "1.8.0", -1},
		{"1.14.2", "1.8.0", 1}, // numeric, not lexical
		{"1.47.0", "1.47.1", -1},
		{"1.47.2", "1.47.1", 1},
		{"2.0.0", "1.99.99", 1},
		{"0.9.9", "1.0.0", -1},
	}
	for _, tt := range tests {
		a, err := ParseVersion(tt.a)
		if err != nil {
			t.Fatal(err)
		}
		b, err := ParseVersion(tt.b)
		if err != nil {
			t.Fatal(err)
		}
		if got := a.Compare(b); got != tt.want {
			t.Errorf("%s.Compare(%s) = %d, want %d", tt.a, tt.b, got, tt.want)
		}
		if got := b.Compare(a); got != -tt.want {
			t.Errorf("%s.Compare(%s) = %d, want %d", tt.b, tt.a, got, -tt.want)
		}
		if got := a.Less(b); got != (tt.want < 0) {
			t.Errorf("%s.Less(%s) = %v", tt.a, tt.b, got)
		}
	}
}

func TestVersionString(t *testing.T) {
	if got := (Version{1, 14, 2}).String(); got != "1.14.2" {
		t.Errorf("String() = %q", got)
	}
}

func TestParseToolVersions(t *testing.T) {
	tests := []struct {
		name    string
		parse   func(string) (Version, error)
		out     string
		want    Version
		wantErr bool
	}{
		{"qemu debian", ParseQEMUVersion,
			"QEMU emulator version 7.2.22 (Debian 1:7.2+dfsg-7+deb12u18+b3)\nCopyright (c) 2003-2022 Fabrice Bellard and the QEMU Project developers\n",
			Version{7, 2, 22}, false},
		{"qemu upstream", ParseQEMUVersion, "QEMU emulator version 9.1.0\n", Version{9, 1, 0}, false},
		{"qemu garbage", ParseQEMUVersion, "bash: qemu: command not found", Version{}, true},
		{"firecracker 1.14.2", ParseFirecrackerVersion, "Firecracker v1.14.2\n\n", Version{1, 14, 2}, false},
		{"firecracker 1.7.0", ParseFirecrackerVersion, "Firecracker v1.7.0\n", Version{1, 7, 0}, false},
		{"firecracker dev", ParseFirecrackerVersion, "Firecracker v1.15.0-dev\n", Version{1, 15, 0}, false},
		{"firecracker empty", ParseFirecrackerVersion, "", Version{}, true},
		{"mke2fs 1.47.0", ParseE2fsprogsVersion,
			"mke2fs 1.47.0 (5-Feb-2023)\n\tUsing EXT2FS Library version 1.47.0\n", Version{1, 47, 0}, false},
		{"mke2fs 1.47.2", ParseE2fsprogsVersion,
			"mke2fs 1.47.2 (1-Jan-2025)\n\tUsing EXT2FS Library version 1.47.2\n", Version{1, 47, 2}, false},
		{"e2fsck", ParseE2fsprogsVersion,
			"e2fsck 1.46.5 (30-Dec-2021)\n\tUsing EXT2FS Library version 1.46.5, 30-Dec-2021\n", Version{1, 46, 5}, false},
		{"mke2fs usage", ParseE2fsprogsVersion, "Usage: mke2fs [-c|-l filename] ...", Version{}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := tt.parse(tt.out)
			if tt.wantErr {
				if err == nil {
					t.Fatalf("got %v, want error", got)
				}
				return
			}
			if err != nil || got != tt.want {
				t.Fatalf("got %v, %v; want %v", got, err, tt.want)
			}
		})
	}
}

func TestFirstLineTruncates(t *testing.T) {
	long := strings.Repeat("x", 200) + "\nsecond"
	got := firstLine(long)
	if strings.Contains(got, "second") || len([]rune(got)) != 81 {
		t.Errorf("firstLine = %q (%d runes)", got, len([]rune(got)))
	}
}
