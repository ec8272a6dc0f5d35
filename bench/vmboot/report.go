package main

import (
	"fmt"
	"io"
	"slices"
	"time"
)

// Targets of issue 4.
const (
	targetRatio  = 1.10
	targetDaemon = 50 * time.Millisecond
	targetWrites = 2 << 20
	targetSpread = 0.10
)

func pick[T any](xs []T, f func(T) time.Duration) []time.Duration {
	out := make([]time.Duration, len(xs))
	for i, x := range xs {
		out[i] = f(x)
	}
	return out
}

func verdict(ok bool) string {
	if ok {
		return "ok"
	}
	return "MISSED"
}

func report(w io.Writer, accel string, bs []bangerTimes, rs []rawTimes, wr []writeResult) {
	fmt.Fprintf(w, "\nVM cold path, busybox image, accel %s, %d alternating runs each (median (min–max))\n\n", accel, len(bs))
	total := statsOf(pick(bs, func(b bangerTimes) time.Duration { return b.total }))
	raw := statsOf(pick(rs, func(r rawTimes) time.Duration { return r.exit }))
	fmt.Fprintf(w, "  banger create+exec+delete  %s\n", total)
	fmt.Fprintf(w, "    vm create                %s\n", statsOf(pick(bs, func(b bangerTimes) time.Duration { return b.create })))
	fmt.Fprintf(w, "    vm exec -- true          %s\n", statsOf(pick(bs, func(b bangerTimes) time.Duration { return b.exec })))
	fmt.Fprintf(w, "    vm delete -f             %s\n", statsOf(pick(bs, func(b bangerTimes) time.Duration { return b.del })))
	fmt.Fprintf(w, "  raw QEMU exec→poweroff     %s\n", raw)
	fmt.Fprintf(w, "    agent answered           %s\n", statsOf(pick(rs, func(r rawTimes) time.Duration { return r.agent })))
	fmt.Fprintf(w, "    true exited              %s\n", statsOf(pick(rs, func(r rawTimes) time.Duration { return r.exec })))
	ratio := float64(total.med) / float64(raw.med)
	fmt.Fprintf(w, "  ratio banger/raw (medians) %.3f×   target ≤ %.2f× %s\n", ratio, targetRatio, verdict(ratio <= targetRatio))
	// Each run's two sides ran back to back, under the same host load.
	pairs := make([]float64, 0, len(bs))
	for i := range min(len(bs), len(rs)) {
		pairs = append(pairs, float64(bs[i].total)/float64(rs[i].exit))
	}
	slices.Sort(pairs)
	fmt.Fprintf(w, "  ratio per run pair         %.3f×   (%.3f–%.3f)\n", pairs[len(pairs)/2], pairs[0], pairs[len(pairs)-1])
	bcpu := statsOf(pick(bs, func(b bangerTimes) time.Duration { return b.cliCPU + b.daemonCPU }))
	rcpu := statsOf(pick(rs, func(r rawTimes) time.Duration { return r.cpu }))
	fmt.Fprintf(w, "  CPU time banger            %s  (CLI %s; bangerd with mkfs and QEMU %s)\n", bcpu,
		ms(statsOf(pick(bs, func(b bangerTimes) time.Duration { return b.cliCPU })).med),
		ms(statsOf(pick(bs, func(b bangerTimes) time.Duration { return b.daemonCPU })).med))
	fmt.Fprintf(w, "  CPU time raw QEMU          %s\n", rcpu)
	fmt.Fprintf(w, "  CPU ratio (medians)        %.3f×   (less sensitive to host load than wall time)\n",
		float64(bcpu.med)/float64(rcpu.med))
	fmt.Fprintf(w, "  guest clock at agent ready banger %s, raw %s (the same guest work; differences are host load)\n\n",
		statsOf(pick(bs, func(b bangerTimes) time.Duration { return b.guestReady })),
		statsOf(pick(rs, func(r rawTimes) time.Duration { return r.guestReady })))

	toExec := statsOf(pick(bs, func(b bangerTimes) time.Duration { return b.daemon.toExec }))
	after := statsOf(pick(bs, func(b bangerTimes) time.Duration { return b.daemon.afterAgent }))
	own := statsOf(pick(bs, func(b bangerTimes) time.Duration { return b.daemon.own() }))
	fmt.Fprintf(w, "  daemon, from its log (vm create):\n")
	fmt.Fprintf(w, "    request → VMM exec       %s\n", toExec)
	fmt.Fprintf(w, "    VMM exec → QMP ready     %s\n", statsOf(pick(bs, func(b bangerTimes) time.Duration { return b.daemon.vmmStart })))
	fmt.Fprintf(w, "    QMP ready → agent        %s\n", statsOf(pick(bs, func(b bangerTimes) time.Duration { return b.daemon.guest })))
	fmt.Fprintf(w, "    agent → response         %s\n", after)
	fmt.Fprintf(w, "    own time (sum)           %s   target ≤ %v %s\n", own, targetDaemon, verdict(own.med <= targetDaemon))

	if len(wr) == 0 {
		return
	}
	fmt.Fprintf(w, "\n  bytes written by vm create (medians; %d no-start and %d booted creates per size)\n",
		len(wr[0].samples), len(wr[1].samples))
	fmt.Fprintf(w, "    %-10s %-9s %12s %12s %12s %12s\n", "image", "mode", "bangerd", "qemu", "allocated", "time")
	took := map[bool][]time.Duration{}
	ok := true
	for _, r := range wr {
		mode := "booted"
		if r.noStart {
			mode = "no-start"
		}
		d := medianInt(pickInt(r.samples, func(s writeSample) int64 { return s.daemonBytes }))
		q := medianInt(pickInt(r.samples, func(s writeSample) int64 { return s.qemuBytes }))
		a := medianInt(pickInt(r.samples, func(s writeSample) int64 { return s.allocated }))
		t := statsOf(pick(r.samples, func(s writeSample) time.Duration { return s.took }))
		took[r.noStart] = append(took[r.noStart], t.med)
		if d > targetWrites || a > targetWrites {
			ok = false
		}
		fmt.Fprintf(w, "    %-10s %-9s %12s %12s %12s   %s\n", fmt.Sprintf("%d MiB", r.size>>20), mode, kib(d), kib(q), kib(a), t)
	}
	fmt.Fprintf(w, "    bangerd writes and allocation ≤ 2 MiB for every size: %s\n", verdict(ok))
	for _, noStart := range []bool{true, false} {
		ts := took[noStart]
		if len(ts) != 2 {
			continue
		}
		spread := float64(max(ts[0], ts[1])-min(ts[0], ts[1])) / float64(min(ts[0], ts[1]))
		what := "no-start create (the steps that could depend on the image)"
		if !noStart {
			what = "booted create (includes the guest boot and its ±15-20% TCG noise)"
		}
		fmt.Fprintf(w, "    time difference 256 MiB vs 4 GiB, %s: %.1f%% (target ≤ 10%%) %s\n",
			what, spread*100, verdict(spread <= targetSpread))
	}
}

func pickInt[T any](xs []T, f func(T) int64) []int64 {
	out := make([]int64, len(xs))
	for i, x := range xs {
		out[i] = f(x)
	}
	return out
}

func kib(n int64) string { return fmt.Sprintf("%.0f KiB", float64(n)/1024) }
