package main

import (
	"context"
	"fmt"
	"path/filepath"
	"time"

	"github.com/bangerdev/banger/internal/testenv"
)

// writeSample is what one `vm create` cost on the host's storage.
type writeSample struct {
	daemonBytes int64 // write_bytes of bangerd (and the mkfs/debugfs it ran)
	qemuBytes   int64 // write_bytes of the VM's QEMU up to the agent answering
	allocated   int64 // blocks allocated under the VM's directory afterwards
	took        time.Duration
}

// measureCreate creates one VM of image (booted unless noStart), measures
// it, and deletes it.
func measureCreate(ctx context.Context, in *install, image, name string, noStart bool) (writeSample, error) {
	var s writeSample
	pid, err := in.daemonPID()
	if err != nil {
		return s, err
	}
	before, err := writeBytes(pid)
	if err != nil {
		return s, err
	}
	args := []string{"vm", "create", "--name", name, "--image", image, "--net", "none"}
	if noStart {
		args = append(args, "--no-start")
	}
	if s.took, err = in.timed(ctx, args...); err != nil {
		return s, err
	}
	after, err := writeBytes(pid)
	if err != nil {
		return s, err
	}
	s.daemonBytes = after - before
	vm, err := showVM(ctx, in, name)
	if err != nil {
		return s, err
	}
	if !noStart {
		pids := testenv.QEMUPIDs(vm.Dir)
		if len(pids) != 1 {
			return s, fmt.Errorf("vm %s: QEMU processes %v", name, pids)
		}
		if s.qemuBytes, err = writeBytes(pids[0]); err != nil {
			return s, err
		}
	}
	s.allocated = allocated(vm.Dir)
	_, err = in.run(ctx, "vm", "delete", "-f", name)
	return s, err
}

// writeResult is the median of runs of one image size and mode.
type writeResult struct {
	image   string
	size    int64
	noStart bool
	samples []writeSample
}

// measureWrites registers one image per size and measures creates of
// each, alternating the sizes: nNoStart without boot (the create steps
// proper, cheap, so many samples) and nBooted with boot.
func measureWrites(ctx context.Context, in *install, root, dir string, sizes []int64, nNoStart, nBooted int) ([]writeResult, error) {
	var res []writeResult
	for _, size := range sizes {
		name := fmt.Sprintf("bb-%dm", size>>20)
		rootfs := filepath.Join(dir, name+".ext4")
		if err := busyboxRootfs(ctx, root, rootfs, size); err != nil {
			return nil, err
		}
		if _, err := in.run(ctx, "image", "register", "--name", name, "--rootfs", rootfs, "--kernel-ref", "cloud"); err != nil {
			return nil, err
		}
		res = append(res, writeResult{image: name, size: size, noStart: true}, writeResult{image: name, size: size})
	}
	for i := range max(nNoStart, nBooted) {
		for j := range res {
			r := &res[j]
			if (r.noStart && i >= nNoStart) || (!r.noStart && i >= nBooted) {
				continue
			}
			s, err := measureCreate(ctx, in, r.image, fmt.Sprintf("w%d-%d", i, j), r.noStart)
			if err != nil {
				return nil, err
			}
			r.samples = append(r.samples, s)
		}
	}
	return res, nil
}
