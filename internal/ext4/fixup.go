package ext4

import (
	"encoding/binary"
	"fmt"
	"io"
)

// Superblock and group descriptor offsets used by the fix-up below
// (see the ext4 disk layout documentation).
const (
	sbOffset           = 1024
	sbBlocksCountLo    = 0x04
	sbLogBlockSize     = 0x18
	sbBlocksPerGroup   = 0x20
	sbInodesPerGroup   = 0x28
	sbFirstDataBlock   = 0x14
	sbFeatureIncompat  = 0x60
	sbFeatureRoCompat  = 0x64
	sbDescSize         = 0xFE
	incompat64bit      = 0x80
	roCompatGdtCsum    = 0x10
	roCompatMetaCsum   = 0x400
	gdInodeBitmapLo    = 0x04
	gdInodeBitmapHi    = 0x24
	minGroupDescriptor = 32
)

// padInodeBitmaps sets the padding bits of every group's inode bitmap (the
// bits past s_inodes_per_group up to the end of the bitmap block), as mke2fs
// does. tar2ext4 leaves them clear, which e2fsck ≥ 1.47 reports as "Padding
// at end of inode bitmap is not set". Images with bitmap checksums are left
// alone: tar2ext4 never writes them.
func padInodeBitmaps(f io.ReaderAt, w io.WriterAt) error {
	sb := make([]byte, 1024)
	if _, err := f.ReadAt(sb, sbOffset); err != nil {
		return fmt.Errorf("reading superblock: %w", err)
	}
	le := binary.LittleEndian
	if le.Uint16(sb[0x38:]) != 0xEF53 {
		return fmt.Errorf("reading superblock: bad magic")
	}
	if le.Uint32(sb[sbFeatureRoCompat:])&(roCompatGdtCsum|roCompatMetaCsum) != 0 {
		return nil
	}
	bs := int64(1024) << le.Uint32(sb[sbLogBlockSize:])
	blocks := int64(le.Uint32(sb[sbBlocksCountLo:]))
	bpg := int64(le.Uint32(sb[sbBlocksPerGroup:]))
	ipg := int64(le.Uint32(sb[sbInodesPerGroup:]))
	first := int64(le.Uint32(sb[sbFirstDataBlock:]))
	if bpg == 0 || ipg == 0 || ipg > bs*8 {
		return fmt.Errorf("reading superblock: bad geometry")
	}
	if ipg == bs*8 {
		return nil
	}
	descSize := int64(minGroupDescriptor)
	is64 := le.Uint32(sb[sbFeatureIncompat:])&incompat64bit != 0
	if is64 {
		if ds := int64(le.Uint16(sb[sbDescSize:])); ds > descSize {
			descSize = ds
		}
	}
	groups := (blocks - first + bpg - 1) / bpg
	gdt := make([]byte, groups*descSize)
	if _, err := f.ReadAt(gdt, (first+1)*bs); err != nil {
		return fmt.Errorf("reading group descriptors: %w", err)
	}
	bitmap := make([]byte, bs)
	for g := int64(0); g < groups; g++ {
		d := gdt[g*descSize:]
		blk := int64(le.Uint32(d[gdInodeBitmapLo:]))
		if is64 && descSize >= 64 {
			blk |= int64(le.Uint32(d[gdInodeBitmapHi:])) << 32
		}
		if _, err := f.ReadAt(bitmap, blk*bs); err != nil {
			return fmt.Errorf("reading inode bitmap of group %d: %w", g, err)
		}
		for i := ipg; i < bs*8; i++ {
			bitmap[i/8] |= 1 << (i % 8)
		}
		if _, err := w.WriteAt(bitmap, blk*bs); err != nil {
			return fmt.Errorf("writing inode bitmap of group %d: %w", g, err)
		}
	}
	return nil
}
