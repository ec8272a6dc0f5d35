package firecracker

import (
	"fmt"
	"os"

	"golang.org/x/sys/unix"
)

// shareTap lets the jail user open a persistent tap: the jailed
// Firecracker runs without CAP_NET_ADMIN, and the kernel only lets such a
// process attach to a tap whose owner or group it is (TUNSETOWNER,
// TUNSETGROUP). The tap is opened with the flags Firecracker uses, so the
// change applies to the tap Firecracker then attaches to; the setting
// lives as long as the tap, which banger never reuses for another VM.
func shareTap(name string, uid, gid int) error {
	f, err := os.OpenFile("/dev/net/tun", os.O_RDWR, 0)
	if err != nil {
		return fmt.Errorf("opening /dev/net/tun to share tap %s: %w", name, err)
	}
	defer f.Close()
	ifr, err := unix.NewIfreq(name)
	if err != nil {
		return fmt.Errorf("tap %s: %w", name, err)
	}
	ifr.SetUint16(unix.IFF_TAP | unix.IFF_NO_PI | unix.IFF_VNET_HDR)
	fd := f.Fd()
	if err := unix.IoctlIfreq(int(fd), unix.TUNSETIFF, ifr); err != nil {
		return fmt.Errorf("attaching to tap %s: %w", name, err)
	}
	if err := unix.IoctlSetInt(int(fd), unix.TUNSETOWNER, uid); err != nil {
		return fmt.Errorf("giving tap %s to uid %d: %w", name, uid, err)
	}
	if err := unix.IoctlSetInt(int(fd), unix.TUNSETGROUP, gid); err != nil {
		return fmt.Errorf("giving tap %s to gid %d: %w", name, gid, err)
	}
	return nil
}
