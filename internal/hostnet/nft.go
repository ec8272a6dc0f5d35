package hostnet

import (
	"errors"
	"fmt"
	"net/netip"
	"os"
	"sort"

	"github.com/google/nftables"
	"github.com/google/nftables/binaryutil"
	"github.com/google/nftables/expr"
	"golang.org/x/sys/unix"
)

// NFT implements Firewall with nf_tables over netlink (no nft or
// iptables binaries). Everything lives in one "ip" family table:
//
//	chain forward (filter hook forward): established and related flows
//	  pass; from the bridge, each VM's source address jumps to its chain;
//	  anything else from the bridge and new flows into it are dropped.
//	chain vm_<id>: accept (nat), reject (private), or the allow-list
//	  lookups then reject (restricted).
//	chain postrouting (nat hook postrouting): masquerade nat VMs leaving
//	  through another interface.
//	sets c_<id> (interval, allowed CIDRs) and h_<id> (timeout, addresses
//	  answered by DNS for allowed names).
//
// and a "bridge" family table of the same name whose prerouting chain
// keeps each VM to its own addresses: from a VM's tap, only IPv4 and ARP
// frames with the VM's MAC and IPv4 address pass (so a guest cannot take
// another VM's address to escape its egress rules).
type NFT struct {
	// NetNS, when non-zero, is a network namespace fd to program (tests).
	NetNS int
}

func (n *NFT) conn() (*nftables.Conn, error) {
	var opts []nftables.ConnOption
	if n.NetNS != 0 {
		opts = append(opts, nftables.WithNetNSFd(n.NetNS))
	}
	c, err := nftables.New(opts...)
	if err != nil {
		return nil, fmt.Errorf("opening nftables: %w", err)
	}
	return c, nil
}

// Apply implements Firewall.
func (n *NFT) Apply(rs Ruleset) error {
	c, err := n.conn()
	if err != nil {
		return err
	}
	t := &nftables.Table{Name: rs.Table, Family: nftables.TableFamilyIPv4}
	// add + delete + add replaces the table in the same transaction
	// whether it existed or not.
	c.AddTable(t)
	c.DelTable(t)
	c.AddTable(t)

	fwd := c.AddChain(&nftables.Chain{
		Name: "forward", Table: t, Type: nftables.ChainTypeFilter,
		Hooknum: nftables.ChainHookForward, Priority: nftables.ChainPriorityFilter,
	})
	post := c.AddChain(&nftables.Chain{
		Name: "postrouting", Table: t, Type: nftables.ChainTypeNAT,
		Hooknum: nftables.ChainHookPostrouting, Priority: nftables.ChainPriorityNATSource,
	})
	rule := func(ch *nftables.Chain, exprs ...expr.Any) {
		c.AddRule(&nftables.Rule{Table: t, Chain: ch, Exprs: exprs})
	}

	rule(fwd, ctEstablished(accept())...)
	rule(fwd, cat(ifname(expr.MetaKeyIIFNAME, rs.Bridge), ifname(expr.MetaKeyOIFNAME, rs.Bridge), accept())...)

	vms := append([]VMRules(nil), rs.VMs...)
	sort.Slice(vms, func(i, j int) bool { return vms[i].ID < vms[j].ID })
	for _, vm := range vms {
		if !vm.Addr.Is4() {
			return fmt.Errorf("vm %s: address %v is not IPv4", vm.ID, vm.Addr)
		}
		ch := c.AddChain(&nftables.Chain{Name: vmChain(vm.ID), Table: t})
		rule(fwd, cat(ifname(expr.MetaKeyIIFNAME, rs.Bridge), addr(12, vm.Addr), jump(ch.Name))...)
		switch {
		case vm.Mode == ModePrivate:
		case vm.Restricted:
			cs := &nftables.Set{Table: t, Name: cidrSet(vm.ID), KeyType: nftables.TypeIPAddr, Interval: true}
			if err := c.AddSet(cs, intervalElements(vm.AllowCIDRs)); err != nil {
				return fmt.Errorf("vm %s: cidr set: %w", vm.ID, err)
			}
			hs := &nftables.Set{Table: t, Name: hostSet(vm.ID), KeyType: nftables.TypeIPAddr, HasTimeout: true}
			if err := c.AddSet(hs, timedElements(vm.HostAddrs)); err != nil {
				return fmt.Errorf("vm %s: host set: %w", vm.ID, err)
			}
			rule(ch, cat(daddr(), lookup(cs), accept())...)
			rule(ch, cat(daddr(), lookup(hs), accept())...)
		default:
			rule(ch, accept()...)
		}
		rule(ch, cat(l4proto(unix.IPPROTO_TCP), &expr.Reject{Type: unix.NFT_REJECT_TCP_RST})...)
		rule(ch, &expr.Reject{Type: unix.NFT_REJECT_ICMP_UNREACH, Code: 13}) // admin prohibited
		if vm.Mode == ModeNAT {
			rule(post, cat(ifnameNot(expr.MetaKeyOIFNAME, rs.Bridge), addr(12, vm.Addr), &expr.Masq{})...)
		}
	}
	rule(fwd, cat(ifname(expr.MetaKeyIIFNAME, rs.Bridge), drop())...)
	rule(fwd, cat(ifname(expr.MetaKeyOIFNAME, rs.Bridge), drop())...)
	n.bridgeTable(c, rs, vms)
	if err := c.Flush(); err != nil {
		return fmt.Errorf("programming nftables table %s: %w", rs.Table, err)
	}
	return nil
}

// bridgeTable queues the anti-spoofing table.
func (n *NFT) bridgeTable(c *nftables.Conn, rs Ruleset, vms []VMRules) {
	t := &nftables.Table{Name: rs.Table, Family: nftables.TableFamilyBridge}
	c.AddTable(t)
	c.DelTable(t)
	c.AddTable(t)
	ch := c.AddChain(&nftables.Chain{
		Name: "prerouting", Table: t, Type: nftables.ChainTypeFilter,
		Hooknum: nftables.ChainHookPrerouting, Priority: nftables.ChainPriorityFilter,
	})
	rule := func(exprs ...expr.Any) { c.AddRule(&nftables.Rule{Table: t, Chain: ch, Exprs: exprs}) }
	etherType := &expr.Payload{DestRegister: 1, Base: expr.PayloadBaseLLHeader, Offset: 12, Len: 2}
	ipv4, arp := []byte{0x08, 0x00}, []byte{0x08, 0x06}
	for _, vm := range vms {
		if vm.Tap == "" {
			continue
		}
		tap := ifname(expr.MetaKeyIIFNAME, vm.Tap)
		// Only IPv4 and ARP.
		rule(cat(tap, etherType,
			&expr.Cmp{Op: expr.CmpOpNeq, Register: 1, Data: ipv4},
			&expr.Cmp{Op: expr.CmpOpNeq, Register: 1, Data: arp}, drop())...)
		if len(vm.MAC) == 6 {
			rule(cat(tap, &expr.Payload{DestRegister: 1, Base: expr.PayloadBaseLLHeader, Offset: 6, Len: 6},
				&expr.Cmp{Op: expr.CmpOpNeq, Register: 1, Data: []byte(vm.MAC)}, drop())...)
		}
		rule(cat(tap, etherType, &expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: ipv4},
			&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: 12, Len: 4},
			&expr.Cmp{Op: expr.CmpOpNeq, Register: 1, Data: vm.Addr.AsSlice()}, drop())...)
		// ARP sender protocol address (after htype, ptype, hlen, plen, op, sha).
		rule(cat(tap, etherType, &expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: arp},
			&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: 14, Len: 4},
			&expr.Cmp{Op: expr.CmpOpNeq, Register: 1, Data: vm.Addr.AsSlice()}, drop())...)
	}
}

// AllowAddrs implements Firewall. Elements already present get their
// timeout renewed (delete + add in one batch); if the delete fails because
// an element is not there, the add is retried alone.
func (n *NFT) AllowAddrs(table, vmID string, addrs []TimedAddr) error {
	if len(addrs) == 0 {
		return nil
	}
	c, err := n.conn()
	if err != nil {
		return err
	}
	t := &nftables.Table{Name: table, Family: nftables.TableFamilyIPv4}
	s := &nftables.Set{Table: t, Name: hostSet(vmID), KeyType: nftables.TypeIPAddr, HasTimeout: true}
	elems := timedElements(addrs)
	keys := make([]nftables.SetElement, len(elems))
	for i, e := range elems {
		keys[i] = nftables.SetElement{Key: e.Key}
	}
	existing, err := c.GetSetElements(s)
	if err != nil {
		return fmt.Errorf("reading set %s: %w", s.Name, err)
	}
	present := map[netip.Addr]bool{}
	for _, e := range existing {
		if a, ok := netip.AddrFromSlice(e.Key); ok {
			present[a] = true
		}
	}
	var renew []nftables.SetElement
	for _, a := range addrs {
		if present[a.Addr] {
			renew = append(renew, nftables.SetElement{Key: a.Addr.AsSlice()})
		}
	}
	if len(renew) > 0 {
		if err := c.SetDeleteElements(s, renew); err != nil {
			return err
		}
	}
	if err := c.SetAddElements(s, elems); err != nil {
		return err
	}
	if err := c.Flush(); err == nil {
		return nil
	} else if len(renew) == 0 {
		return fmt.Errorf("adding to set %s: %w", s.Name, err)
	}
	if err := c.SetAddElements(s, elems); err != nil {
		return err
	}
	if err := c.Flush(); err != nil {
		return fmt.Errorf("adding to set %s: %w", s.Name, err)
	}
	return nil
}

// Delete implements Firewall.
func (n *NFT) Delete(table string) error {
	c, err := n.conn()
	if err != nil {
		return err
	}
	for _, fam := range []nftables.TableFamily{nftables.TableFamilyIPv4, nftables.TableFamilyBridge} {
		t := &nftables.Table{Name: table, Family: fam}
		c.AddTable(t)
		c.DelTable(t)
	}
	if err := c.Flush(); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("deleting nftables table %s: %w", table, err)
	}
	return nil
}

func intervalElements(ps []netip.Prefix) []nftables.SetElement {
	var out []nftables.SetElement
	for _, p := range mergePrefixes(ps) {
		p = p.Masked()
		out = append(out, nftables.SetElement{Key: p.Addr().AsSlice()})
		if end := broadcast(p).Next(); end.IsValid() && end.Is4() {
			out = append(out, nftables.SetElement{Key: end.AsSlice(), IntervalEnd: true})
		}
	}
	return out
}

// mergePrefixes drops prefixes contained in others (interval sets refuse
// overlapping elements) and sorts the rest.
func mergePrefixes(ps []netip.Prefix) []netip.Prefix {
	var v4 []netip.Prefix
	for _, p := range ps {
		if p.Addr().Is4() {
			v4 = append(v4, p.Masked())
		}
	}
	sort.Slice(v4, func(i, j int) bool {
		if v4[i].Bits() != v4[j].Bits() {
			return v4[i].Bits() < v4[j].Bits()
		}
		return v4[i].Addr().Less(v4[j].Addr())
	})
	var out []netip.Prefix
	for _, p := range v4 {
		covered := false
		for _, q := range out {
			if q.Overlaps(p) {
				covered = true // q is shorter (sorted by length), so it contains p
				break
			}
		}
		if !covered {
			out = append(out, p)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Addr().Less(out[j].Addr()) })
	return out
}

func timedElements(as []TimedAddr) []nftables.SetElement {
	var out []nftables.SetElement
	seen := map[netip.Addr]bool{}
	for _, a := range as {
		if !a.Addr.Is4() || seen[a.Addr] || a.Timeout <= 0 {
			continue
		}
		seen[a.Addr] = true
		out = append(out, nftables.SetElement{Key: a.Addr.AsSlice(), Timeout: a.Timeout})
	}
	return out
}

func cat(parts ...any) []expr.Any {
	var out []expr.Any
	for _, p := range parts {
		switch v := p.(type) {
		case []expr.Any:
			out = append(out, v...)
		case expr.Any:
			out = append(out, v)
		}
	}
	return out
}

func ifnameBytes(n string) []byte {
	b := make([]byte, 16)
	copy(b, n)
	return b
}

func ifname(key expr.MetaKey, name string) []expr.Any {
	return []expr.Any{
		&expr.Meta{Key: key, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: ifnameBytes(name)},
	}
}

func ifnameNot(key expr.MetaKey, name string) []expr.Any {
	return []expr.Any{
		&expr.Meta{Key: key, Register: 1},
		&expr.Cmp{Op: expr.CmpOpNeq, Register: 1, Data: ifnameBytes(name)},
	}
}

// addr matches the IPv4 header field at offset (12 source, 16 destination).
func addr(offset uint32, a netip.Addr) []expr.Any {
	return []expr.Any{
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: offset, Len: 4},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: a.AsSlice()},
	}
}

func daddr() []expr.Any {
	return []expr.Any{&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: 16, Len: 4}}
}

func lookup(s *nftables.Set) []expr.Any {
	return []expr.Any{&expr.Lookup{SourceRegister: 1, SetName: s.Name, SetID: s.ID}}
}

func l4proto(p byte) []expr.Any {
	return []expr.Any{
		&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{p}},
	}
}

func ctEstablished(verdict []expr.Any) []expr.Any {
	mask := binaryutil.NativeEndian.PutUint32(expr.CtStateBitESTABLISHED | expr.CtStateBitRELATED)
	return cat([]expr.Any{
		&expr.Ct{Register: 1, Key: expr.CtKeySTATE},
		&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 4, Mask: mask, Xor: binaryutil.NativeEndian.PutUint32(0)},
		&expr.Cmp{Op: expr.CmpOpNeq, Register: 1, Data: binaryutil.NativeEndian.PutUint32(0)},
	}, verdict)
}

func accept() []expr.Any { return []expr.Any{&expr.Verdict{Kind: expr.VerdictAccept}} }
func drop() []expr.Any   { return []expr.Any{&expr.Verdict{Kind: expr.VerdictDrop}} }
func jump(chain string) []expr.Any {
	return []expr.Any{&expr.Verdict{Kind: expr.VerdictJump, Chain: chain}}
}
