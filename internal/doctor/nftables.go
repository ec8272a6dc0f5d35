package doctor

import (
	"context"
	"encoding/binary"
	"fmt"
	"syscall"
	"time"
)

// nf_tables netlink constants (linux/netfilter/nfnetlink.h, nf_tables.h).
const (
	nfnlSubsysNftables = 10
	nftMsgNewTable     = 0
	nftMsgGetTable     = 1
	nlmsgHdrLen        = 16
	nfgenmsgLen        = 4
)

// nftablesTables sends an nf_tables "get tables" dump request over a
// NETLINK_NETFILTER socket and counts the tables in the reply. It needs
// CAP_NET_ADMIN (the kernel answers EPERM otherwise) and fails when the
// kernel has no nf_tables.
func nftablesTables(ctx context.Context) (int, error) {
	fd, err := syscall.Socket(syscall.AF_NETLINK, syscall.SOCK_RAW|syscall.SOCK_CLOEXEC, syscall.NETLINK_NETFILTER)
	if err != nil {
		return 0, fmt.Errorf("opening netfilter netlink socket: %w", err)
	}
	defer syscall.Close(fd)

	wait := 2 * time.Second
	if dl, ok := ctx.Deadline(); ok {
		wait = time.Until(dl)
	}
	if wait <= 0 {
		return 0, ctx.Err()
	}
	tv := syscall.NsecToTimeval(wait.Nanoseconds())
	if err := syscall.SetsockoptTimeval(fd, syscall.SOL_SOCKET, syscall.SO_RCVTIMEO, &tv); err != nil {
		return 0, fmt.Errorf("setting netlink receive timeout: %w", err)
	}

	const seq = 1
	req := make([]byte, nlmsgHdrLen+nfgenmsgLen)
	ne := binary.NativeEndian
	ne.PutUint32(req[0:4], uint32(len(req)))
	ne.PutUint16(req[4:6], nfnlSubsysNftables<<8|nftMsgGetTable)
	ne.PutUint16(req[6:8], syscall.NLM_F_REQUEST|syscall.NLM_F_DUMP)
	ne.PutUint32(req[8:12], seq)
	// nfgenmsg: family AF_UNSPEC (all families), version 0, res_id 0.
	if err := syscall.Sendto(fd, req, 0, &syscall.SockaddrNetlink{Family: syscall.AF_NETLINK}); err != nil {
		return 0, fmt.Errorf("sending nf_tables request: %w", err)
	}

	buf := make([]byte, 64<<10)
	tables := 0
	for {
		n, _, err := syscall.Recvfrom(fd, buf, 0)
		if err != nil {
			return 0, fmt.Errorf("reading nf_tables reply: %w", err)
		}
		msgs, err := syscall.ParseNetlinkMessage(buf[:n])
		if err != nil {
			return 0, fmt.Errorf("parsing nf_tables reply: %w", err)
		}
		for _, m := range msgs {
			if m.Header.Seq != seq {
				continue
			}
			switch m.Header.Type {
			case syscall.NLMSG_DONE:
				return tables, nil
			case syscall.NLMSG_ERROR:
				if len(m.Data) < 4 {
					return 0, fmt.Errorf("reading nf_tables reply: short error message")
				}
				if code := int32(ne.Uint32(m.Data[0:4])); code != 0 {
					return 0, syscall.Errno(-code)
				}
			case nfnlSubsysNftables<<8 | nftMsgNewTable:
				tables++
			}
		}
	}
}
