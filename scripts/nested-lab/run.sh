#!/bin/bash
# run.sh OUT — boot the L1 guest built by build.sh under QEMU TCG with
# -cpu max (emulated AMD-V, so kvm_amd loads in L1), let l1-run.sh run the
# Firecracker and QEMU driver tests, the CLI cycle and the network check
# inside it, and bring the results back: the serial console goes to
# OUT/console.log (and stdout), the results disk is unpacked to
# OUT/results. Exits 0 when every step passed.
#   LAB_TIMEOUT  seconds before the L1 guest is killed (default 5400)
#   LAB_STEPS    comma-separated subset of: fc-driver,qemu-conformance,cycle,net
#   LAB_MEM_MIB  L1 memory (default 4096), LAB_CPUS (default: host CPUs, max 4)
set -euo pipefail
out=${1:?usage: run.sh OUT}
out=$(cd "$out" && pwd)
for f in vmlinux initrd-l1.img lab.ext4; do
	[ -f "$out/$f" ] || { echo "run.sh: $out/$f missing (run build.sh first)" >&2; exit 1; }
done
mem=${LAB_MEM_MIB:-4096}
cpus=${LAB_CPUS:-$(nproc)}
[ "$cpus" -gt 4 ] && cpus=4
timeout_s=${LAB_TIMEOUT:-5400}

# A sparse scratch disk for L1's writable overlay (L2 disks live there),
# and a small results disk.
rm -f "$out/overlay.ext4" "$out/results.ext4"
truncate -s 24G "$out/overlay.ext4"
mkfs.ext4 -q -F -O ^has_journal "$out/overlay.ext4"
truncate -s 128M "$out/results.ext4"
mkfs.ext4 -q -F -L lab-results "$out/results.ext4"

# TCG guests need tsc_early_khz, or TSC calibration against the emulated
# PIT sometimes hangs (notes/boot-lab.md §3.4). tsc=reliable keeps the TSC
# (which follows host time under TCG) as L1's clocksource: without it L1
# marks the TSC unstable, falls back to jiffies, and its clock, with which
# every in-lab timing is taken, runs up to 3x slower than the wall clock.
khz=$(cat /sys/devices/system/cpu/cpu0/tsc_freq_khz 2>/dev/null ||
	awk -F: '/cpu MHz/ { printf "%d", $2 * 1000; exit }' /proc/cpuinfo)
append="console=ttyS0 quiet panic=-1 cryptomgr.notests 8250.nr_uarts=1 i8042.noaux i8042.nomux i8042.nopnp i8042.dumbkbd"
append+=" random.trust_cpu=on mitigations=off audit=0 nowatchdog tsc_early_khz=$khz tsc=reliable"
append+=" banger.root=/dev/vda banger.overlay=/dev/vdb banger.init=systemd banger.hostname=lab-l1"

[ -n "${LAB_STEPS:-}" ] && append+=" lab.steps=$LAB_STEPS"

echo "run.sh: booting L1 (TCG, -cpu max, ${cpus} vCPUs, ${mem} MiB); console in $out/console.log"
start=$(date +%s)
set +e
timeout --foreground -k 10 "$timeout_s" qemu-system-x86_64 \
	-M microvm,acpi=on,pit=on,pic=on,rtc=on -accel tcg -cpu max -m "$mem" -smp "$cpus" \
	-nodefaults -no-user-config -nographic -serial stdio -no-reboot \
	-kernel "$out/vmlinux" -initrd "$out/initrd-l1.img" -append "$append" \
	-drive id=lab,file="$out/lab.ext4",format=raw,if=none,readonly=on -device virtio-blk-device,drive=lab \
	-drive id=ovl,file="$out/overlay.ext4",format=raw,if=none -device virtio-blk-device,drive=ovl \
	-drive id=res,file="$out/results.ext4",format=raw,if=none -device virtio-blk-device,drive=res \
	</dev/null 2>&1 | tee "$out/console.log"
rc=${PIPESTATUS[0]}
set -e
end=$(date +%s)
echo "run.sh: L1 exited with $rc after $((end - start)) s"

rm -rf "$out/results"
mkdir -p "$out/results"
debugfs -R "rdump /out $out/results" "$out/results.ext4" >/dev/null 2>&1 || true
rm -f "$out/overlay.ext4"
summary=$out/results/out/summary.txt
if [ ! -f "$summary" ]; then
	echo "run.sh: no results (see $out/console.log)" >&2
	exit 1
fi
echo "lab wall time $((end - start)) s" >>"$summary"
cat "$summary"
if [ "$rc" != 0 ] || grep -q '^FAIL' "$summary" || ! grep -q '^done' "$summary"; then
	echo "run.sh: lab FAILED" >&2
	exit 1
fi
echo "run.sh: lab passed"
