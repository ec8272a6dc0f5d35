// Package cpio writes and reads "newc" (SVR4, magic 070701) cpio archives,
// the format the Linux kernel unpacks as an initramfs.
//
// Each entry is a 110-byte ASCII header (magic plus 13 eight-digit hex
// fields), the NUL-terminated name padded to a multiple of 4 bytes, then the
// data padded to a multiple of 4 bytes. The archive ends with an entry named
// "TRAILER!!!".
package cpio

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"strconv"
	"strings"
)

const (
	magic      = "070701"
	headerLen  = 110
	trailer    = "TRAILER!!!"
	maxNameLen = 4096
)

// File type bits of the cpio mode field (same values as in stat(2)).
const (
	TypeMask    = 0o170000
	TypeDir     = 0o040000
	TypeReg     = 0o100000
	TypeSymlink = 0o120000
	TypeChar    = 0o020000
	TypeBlock   = 0o060000
)

// Header describes one archive entry.
type Header struct {
	Name     string // relative path without leading "/", e.g. "dev/console"
	Mode     uint32 // type bits | permission bits
	UID, GID uint32
	Mtime    uint32
	Size     int64 // data length; for symlinks the target length
	NLink    uint32
	DevMajor uint32 // device holding the entry (0 here)
	DevMinor uint32
	Major    uint32 // rdev, for character and block devices
	Minor    uint32
	Inode    uint32
}

// Writer emits a newc archive. Entries get increasing inode numbers and a
// zero mtime, so the same input always yields the same bytes.
type Writer struct {
	w      io.Writer
	inode  uint32
	closed bool
	err    error
}

// NewWriter returns a Writer writing to w. Call Close to write the trailer.
func NewWriter(w io.Writer) *Writer { return &Writer{w: w, inode: 1} }

// Dir adds a directory.
func (cw *Writer) Dir(name string, perm fs.FileMode) error {
	return cw.entry(Header{Name: name, Mode: TypeDir | uint32(perm.Perm()), NLink: 2}, nil)
}

// File adds a regular file with the given contents.
func (cw *Writer) File(name string, perm fs.FileMode, data []byte) error {
	return cw.entry(Header{Name: name, Mode: TypeReg | uint32(perm.Perm()), Size: int64(len(data)), NLink: 1}, bytes.NewReader(data))
}

// FileFrom adds a regular file of size bytes read from r.
func (cw *Writer) FileFrom(name string, perm fs.FileMode, size int64, r io.Reader) error {
	return cw.entry(Header{Name: name, Mode: TypeReg | uint32(perm.Perm()), Size: size, NLink: 1}, r)
}

// Symlink adds a symbolic link name pointing at target.
func (cw *Writer) Symlink(name, target string) error {
	return cw.entry(Header{Name: name, Mode: TypeSymlink | 0o777, Size: int64(len(target)), NLink: 1}, strings.NewReader(target))
}

// CharDev adds a character device node.
func (cw *Writer) CharDev(name string, perm fs.FileMode, major, minor uint32) error {
	return cw.entry(Header{Name: name, Mode: TypeChar | uint32(perm.Perm()), NLink: 1, Major: major, Minor: minor}, nil)
}

// Close writes the trailer entry. It does not close the underlying writer.
func (cw *Writer) Close() error {
	if cw.closed {
		return cw.err
	}
	if err := cw.writeHeader(Header{Name: trailer, NLink: 1}); err != nil {
		return err
	}
	cw.closed = true
	return nil
}

func (cw *Writer) entry(h Header, data io.Reader) error {
	if cw.err != nil {
		return cw.err
	}
	if cw.closed {
		return errors.New("cpio: write after close")
	}
	name := strings.TrimPrefix(h.Name, "/")
	if name == "" || name == trailer || len(name) >= maxNameLen || strings.ContainsRune(name, 0) {
		return fmt.Errorf("cpio: invalid entry name %q", h.Name)
	}
	h.Name = name
	h.Inode = cw.inode
	cw.inode++
	if err := cw.writeHeader(h); err != nil {
		return err
	}
	if h.Size == 0 {
		return nil
	}
	n, err := io.CopyN(cw.w, data, h.Size)
	if err != nil {
		cw.err = fmt.Errorf("cpio: writing %s (%d of %d bytes): %w", name, n, h.Size, err)
		return cw.err
	}
	return cw.pad(h.Size)
}

func (cw *Writer) writeHeader(h Header) error {
	if h.Size < 0 || h.Size > 0xffffffff {
		return fmt.Errorf("cpio: %s: size %d does not fit the newc format", h.Name, h.Size)
	}
	var b strings.Builder
	b.Grow(headerLen + len(h.Name) + 4)
	b.WriteString(magic)
	for _, v := range []uint32{h.Inode, h.Mode, h.UID, h.GID, h.NLink, h.Mtime, uint32(h.Size),
		h.DevMajor, h.DevMinor, h.Major, h.Minor, uint32(len(h.Name) + 1), 0} {
		fmt.Fprintf(&b, "%08x", v)
	}
	b.WriteString(h.Name)
	b.WriteByte(0)
	for b.Len()%4 != 0 {
		b.WriteByte(0)
	}
	if _, err := io.WriteString(cw.w, b.String()); err != nil {
		cw.err = fmt.Errorf("cpio: writing header of %s: %w", h.Name, err)
		return cw.err
	}
	return nil
}

func (cw *Writer) pad(n int64) error {
	if p := (4 - n%4) % 4; p != 0 {
		if _, err := cw.w.Write(make([]byte, p)); err != nil {
			cw.err = fmt.Errorf("cpio: padding: %w", err)
			return cw.err
		}
	}
	return nil
}

// Reader reads a newc archive entry by entry.
type Reader struct {
	r      io.Reader
	remain int64 // unread data of the current entry
	pad    int64 // padding after the current entry's data
	done   bool
}

// NewReader returns a Reader reading from r.
func NewReader(r io.Reader) *Reader { return &Reader{r: r} }

// Next advances to the next entry and returns its header. It returns io.EOF
// after the trailer.
func (cr *Reader) Next() (*Header, error) {
	if cr.done {
		return nil, io.EOF
	}
	if _, err := io.CopyN(io.Discard, cr.r, cr.remain+cr.pad); err != nil {
		return nil, fmt.Errorf("cpio: skipping entry data: %w", err)
	}
	cr.remain, cr.pad = 0, 0
	var hdr [headerLen]byte
	if _, err := io.ReadFull(cr.r, hdr[:]); err != nil {
		return nil, fmt.Errorf("cpio: reading header: %w", err)
	}
	if string(hdr[:6]) != magic {
		return nil, fmt.Errorf("cpio: bad magic %q (want newc %s)", hdr[:6], magic)
	}
	var f [13]uint32
	for i := range f {
		v, err := strconv.ParseUint(string(hdr[6+8*i:14+8*i]), 16, 32)
		if err != nil {
			return nil, fmt.Errorf("cpio: bad header field %d: %w", i, err)
		}
		f[i] = uint32(v)
	}
	nameLen := int(f[11])
	if nameLen < 1 || nameLen > maxNameLen {
		return nil, fmt.Errorf("cpio: bad name length %d", nameLen)
	}
	nameBuf := make([]byte, nameLen+int((4-(headerLen+nameLen)%4)%4))
	if _, err := io.ReadFull(cr.r, nameBuf); err != nil {
		return nil, fmt.Errorf("cpio: reading name: %w", err)
	}
	h := &Header{
		Inode: f[0], Mode: f[1], UID: f[2], GID: f[3], NLink: f[4], Mtime: f[5], Size: int64(f[6]),
		DevMajor: f[7], DevMinor: f[8], Major: f[9], Minor: f[10],
		Name: string(bytes.TrimRight(nameBuf[:nameLen], "\x00")),
	}
	if h.Name == trailer {
		cr.done = true
		return nil, io.EOF
	}
	cr.remain = h.Size
	cr.pad = (4 - h.Size%4) % 4
	return h, nil
}

// Read reads the current entry's data.
func (cr *Reader) Read(p []byte) (int, error) {
	if cr.remain == 0 {
		return 0, io.EOF
	}
	if int64(len(p)) > cr.remain {
		p = p[:cr.remain]
	}
	n, err := cr.r.Read(p)
	cr.remain -= int64(n)
	if err == io.EOF && cr.remain > 0 {
		err = io.ErrUnexpectedEOF
	}
	return n, err
}
