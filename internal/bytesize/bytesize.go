// Package bytesize parses and formats human-written sizes such as "4G",
// "512MiB" or "100" (a bare number is MiB, the unit disks are sized in).
package bytesize

import (
	"fmt"
	"math"
	"strconv"
	"strings"

	"github.com/bangerdev/banger/internal/errkind"
)

// Binary units.
const (
	KiB int64 = 1 << 10
	MiB int64 = 1 << 20
	GiB int64 = 1 << 30
	TiB int64 = 1 << 40
)

var units = map[string]int64{
	"":  MiB, // bare numbers are MiB
	"b": 1,
	"k": KiB, "kb": KiB, "kib": KiB,
	"m": MiB, "mb": MiB, "mib": MiB,
	"g": GiB, "gb": GiB, "gib": GiB,
	"t": TiB, "tb": TiB, "tib": TiB,
}

// Parse parses a size: an integer or decimal number followed by an optional
// unit (B, K/KB/KiB, M/MB/MiB, G/GB/GiB, T/TB/TiB, case-insensitive; every
// unit is binary). A bare number is MiB. The result is a positive byte count.
func Parse(s string) (int64, error) {
	in := strings.TrimSpace(s)
	i := 0
	for i < len(in) && (in[i] >= '0' && in[i] <= '9' || in[i] == '.') {
		i++
	}
	num, unit := in[:i], strings.ToLower(strings.TrimSpace(in[i:]))
	mult, ok := units[unit]
	if num == "" || !ok {
		return 0, errkind.New(errkind.InvalidArgument, "invalid size %q: want a number with an optional unit (K, M, G, T; bare numbers are MiB)", s)
	}
	if !strings.Contains(num, ".") {
		n, err := strconv.ParseInt(num, 10, 64)
		if err != nil || n <= 0 || n > math.MaxInt64/mult {
			return 0, errkind.New(errkind.InvalidArgument, "invalid size %q: must be positive and fit in 64 bits", s)
		}
		return n * mult, nil
	}
	f, err := strconv.ParseFloat(num, 64)
	if err != nil || f <= 0 || f*float64(mult) >= math.MaxInt64 {
		return 0, errkind.New(errkind.InvalidArgument, "invalid size %q: must be positive and fit in 64 bits", s)
	}
	n := int64(math.Ceil(f * float64(mult)))
	return n, nil
}

// Format renders n bytes with the largest binary unit that keeps one decimal,
// e.g. "1.0 GiB", "512.0 MiB", "17 B".
func Format(n int64) string {
	switch {
	case n >= TiB:
		return fmt.Sprintf("%.1f TiB", float64(n)/float64(TiB))
	case n >= GiB:
		return fmt.Sprintf("%.1f GiB", float64(n)/float64(GiB))
	case n >= MiB:
		return fmt.Sprintf("%.1f MiB", float64(n)/float64(MiB))
	case n >= KiB:
		return fmt.Sprintf("%.1f KiB", float64(n)/float64(KiB))
	}
	return fmt.Sprintf("%d B", n)
}
