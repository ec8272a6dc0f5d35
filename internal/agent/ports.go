package agent

import (
	"bufio"
	"encoding/hex"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"

	"github.com/bangerdev/banger/internal/agentproto"
)

// Socket states in /proc/net/{tcp,udp}*.
const (
	tcpListen   = "0A"
	udpUnconnOK = "07" // TCP_CLOSE: a bound, unconnected UDP socket
)

// ListPorts returns the listening TCP sockets and bound, unconnected UDP
// sockets of the network namespace procRoot belongs to, with the owning
// process when it can be found.
func ListPorts(procRoot string) ([]agentproto.Port, error) {
	var ports []agentproto.Port
	for _, f := range []struct{ file, proto string }{
		{"tcp", "tcp"}, {"tcp6", "tcp"}, {"udp", "udp"}, {"udp6", "udp"},
	} {
		ps, err := parseProcNet(filepath.Join(procRoot, "net", f.file), f.proto)
		if err != nil {
			if os.IsNotExist(err) {
				continue // no IPv6, for instance
			}
			return nil, err
		}
		ports = append(ports, ps...)
	}
	owners := socketOwners(procRoot)
	for i := range ports {
		if o, ok := owners[ports[i].Inode]; ok {
			ports[i].PID, ports[i].Process = o.pid, o.comm
		}
	}
	sort.SliceStable(ports, func(i, j int) bool {
		if ports[i].Proto != ports[j].Proto {
			return ports[i].Proto < ports[j].Proto
		}
		if ports[i].Port != ports[j].Port {
			return ports[i].Port < ports[j].Port
		}
		return ports[i].Address < ports[j].Address
	})
	return ports, nil
}

func parseProcNet(path, proto string) ([]agentproto.Port, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var out []agentproto.Port
	sc := bufio.NewScanner(f)
	sc.Scan() // header
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) < 10 {
			continue
		}
		local, remote, state := fields[1], fields[2], fields[3]
		if proto == "tcp" && state != tcpListen {
			continue
		}
		if proto == "udp" {
			if state != udpUnconnOK {
				continue
			}
			if _, rport, err := parseHexAddr(remote); err != nil || rport != 0 {
				continue
			}
		}
		addr, port, err := parseHexAddr(local)
		if err != nil {
			return nil, fmt.Errorf("parsing %s: %w", path, err)
		}
		inode, _ := strconv.ParseUint(fields[9], 10, 64)
		out = append(out, agentproto.Port{Proto: proto, Address: addr.String(), Port: port, Inode: inode})
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("reading %s: %w", path, err)
	}
	return out, nil
}

// parseHexAddr parses "0100007F:1F90" or the 32-digit IPv6 form. Addresses
// are written as host-order (little-endian on x86) 32-bit words.
func parseHexAddr(s string) (netip.Addr, int, error) {
	h, p, ok := strings.Cut(s, ":")
	if !ok {
		return netip.Addr{}, 0, fmt.Errorf("bad socket address %q", s)
	}
	port, err := strconv.ParseUint(p, 16, 16)
	if err != nil {
		return netip.Addr{}, 0, fmt.Errorf("bad port in %q", s)
	}
	raw, err := hex.DecodeString(h)
	if err != nil || (len(raw) != 4 && len(raw) != 16) {
		return netip.Addr{}, 0, fmt.Errorf("bad address in %q", s)
	}
	for i := 0; i < len(raw); i += 4 {
		raw[i], raw[i+1], raw[i+2], raw[i+3] = raw[i+3], raw[i+2], raw[i+1], raw[i]
	}
	addr, _ := netip.AddrFromSlice(raw)
	return addr.Unmap(), int(port), nil
}

type sockOwner struct {
	pid  int
	comm string
}

// socketOwners maps socket inodes to the first process holding them.
func socketOwners(procRoot string) map[uint64]sockOwner {
	owners := map[uint64]sockOwner{}
	ents, err := os.ReadDir(procRoot)
	if err != nil {
		return owners
	}
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		fdDir := filepath.Join(procRoot, e.Name(), "fd")
		fds, err := os.ReadDir(fdDir)
		if err != nil {
			continue
		}
		comm := ""
		for _, fd := range fds {
			link, err := os.Readlink(filepath.Join(fdDir, fd.Name()))
			if err != nil {
				continue
			}
			num, ok := strings.CutPrefix(link, "socket:[")
			if !ok {
				continue
			}
			inode, err := strconv.ParseUint(strings.TrimSuffix(num, "]"), 10, 64)
			if err != nil {
				continue
			}
			if _, seen := owners[inode]; seen {
				continue
			}
			if comm == "" {
				b, _ := os.ReadFile(filepath.Join(procRoot, e.Name(), "comm"))
				comm = strings.TrimSpace(string(b))
			}
			owners[inode] = sockOwner{pid: pid, comm: comm}
		}
	}
	return owners
}
