#!/bin/sh
# l1-run.sh — the nested lab inside the L1 guest (run once by busybox init).
# L1 has KVM on AMD-V emulated by the outer QEMU (TCG), so Firecracker and
# QEMU boot real L2 guests here. Results go to the console (lines starting
# "LAB ") and to the results disk (/dev/vdc): out/summary.txt and one log
# per step. The guest powers off at the end.
export PATH=/lab/bin:/bin:/usr/bin
export HOME=/root
export BANGER_FIRECRACKER_BIN=/lab/bin/firecracker
export BANGER_TEST_CACHE=/var/cache/banger-test
[ -x /lab/bin/jailer ] && export BANGER_JAILER_BIN=/lab/bin/jailer

res=/results/out
mount -t ext4 /dev/vdc /results && mkdir -p $res || res=/tmp/out
mkdir -p $res
grep -q " /sys/fs/cgroup " /proc/mounts || mount -t cgroup2 cgroup2 /sys/fs/cgroup 2>/dev/null

up() { cut -d' ' -f1 /proc/uptime; }
say() { echo "LAB $*"; echo "$*" >>$res/summary.txt; }
elapsed() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.1fs", b - a }'; }

finish() {
	say "done total=$(elapsed 0 "$(up)")"
	sync
	umount /results 2>/dev/null
	poweroff -f
}

say "l1 up=$(up)s kernel=$(uname -r) cpus=$(nproc) mem=$(awk '/MemTotal/ {print $2 "kB"}' /proc/meminfo)"
if [ ! -c /dev/kvm ] || ! grep -qw svm /proc/cpuinfo || [ -d /sys/module/kvm_pvm ]; then
	say "FAIL kvm: no hardware KVM in L1 (dev: $(ls -l /dev/kvm 2>&1); svm: $(grep -cw svm /proc/cpuinfo))"
	finish
fi
say "kvm ok: kvm_amd npt=$(cat /sys/module/kvm_amd/parameters/npt 2>/dev/null) firecracker=$(firecracker --version 2>/dev/null | head -n1)"

# step NAME CMD... runs a command with its output in $res/NAME.log and
# records PASS/FAIL and its duration.
step() {
	name=$1
	shift
	t0=$(up)
	"$@" >$res/$name.log 2>&1
	rc=$?
	st=PASS
	[ $rc = 0 ] || st=FAIL
	say "$st $name rc=$rc time=$(elapsed "$t0" "$(up)")"
	grep -E -- '^ *--- (PASS|FAIL|SKIP)|boot returned|poweroff to exit|shutdown took|junk kernel|^cycle:|^net:' $res/$name.log |
		sed "s/^/  $name: /" | tee -a $res/summary.txt | sed 's/^/LAB /'
	[ $st = PASS ] || tail -n 40 $res/$name.log | sed "s/^/LAB   $name| /"
}

# lab.steps=a,b on the kernel command line (run.sh: LAB_STEPS) picks steps.
steps=$(tr ' ' '\n' </proc/cmdline | sed -n 's/^lab.steps=//p' | tr ',' ' ')
want() { [ -z "$steps" ] || echo " $steps " | grep -q " $1 "; }

# bangerd takes its bridge lock in /run/lock; without it the daemon runs
# without host networking (VMs get --net none).
mkdir -p /run/lock

# /tmp is a nodev tmpfs: the jailer's chroot needs device nodes, and L2
# disks are better on the (sparse) overlay disk than in L1's memory.
mkdir -p /root/tmp
export TMPDIR=/root/tmp
cd /lab/src || finish

want fc-driver && step fc-driver /lab/bin/firecracker.test -test.v -test.timeout 60m \
	-test.run 'TestConformance|TestBootConfigAdoptKill|TestJunkKernel|TestLongRunDir|TestJailer'
want qemu-conformance && step qemu-conformance /lab/bin/qemu.test -test.v -test.timeout 60m -test.run 'TestConformance'

# The CLI cycle: vm create --vmm firecracker / exec uname -r / stop / delete,
# then the same with QEMU for the timings.
cycle() {
	export BANGER_HOME=/root/bh BANGER_DAEMON_BIN=/lab/bin/bangerd
	rel=$(ls /var/cache/banger-test/kernels | head -n1)
	deb=$(ls /var/cache/banger-test/linux-image-*.deb | head -n1)
	t=$(up)
	banger kernel import debian-cloud --from-deb "$deb" || return 1
	echo "cycle: kernel import $(elapsed "$t" "$(up)")"
	banger image register --name busybox --rootfs /lab/busybox.ext4 --kernel-ref debian-cloud || return 1
	banger image promote busybox || return 1
	banger doctor || true
	for vmm in firecracker qemu; do
		vm=c-$vmm
		t=$(up)
		banger vm create --name $vm --image busybox --vmm $vmm --memory 256 || { banger vm logs $vm; return 1; }
		echo "cycle: $vmm vm create $(elapsed "$t" "$(up)")"
		banger vm show $vm | tee /tmp/show
		grep -Eq "vmm[[:space:]]+$vmm" /tmp/show || { echo "cycle: vm show does not say $vmm"; return 1; }
		t=$(up)
		got=$(banger vm exec $vm -- uname -r) || return 1
		echo "cycle: $vmm vm exec uname -r = $got $(elapsed "$t" "$(up)")"
		[ "$got" = "$rel" ] || { echo "cycle: want $rel"; return 1; }
		# The kernel's module tree is the 4th drive, mounted at /lib/modules.
		banger vm exec $vm -- sh -c 'modprobe br_netfilter && grep -q "^br_netfilter " /proc/modules' ||
			{ echo "cycle: $vmm guest modprobe br_netfilter failed"; return 1; }
		echo "cycle: $vmm guest modprobe ok"
		t=$(up)
		banger vm stop $vm || return 1
		echo "cycle: $vmm vm stop $(elapsed "$t" "$(up)")"
		banger vm show $vm | grep -Eq 'state[[:space:]]+stopped' || { echo "cycle: not stopped"; return 1; }
		banger vm delete $vm || return 1
		left=$(ps -o pid,stat,args | grep -E '/lab/bin/firecracker|qemu-system' | grep -v -e grep -e ' Z ')
		if [ -n "$left" ]; then
			echo "cycle: VMM processes left after delete: $left"
			return 1
		fi
		echo "cycle: $vmm create/exec/stop/delete ok"
	done
	banger daemon stop || true
	[ -n "${BANGER_JAILER_BIN:-}" ] || return 0

	# With jailer_bin configured the daemon runs Firecracker in a chroot
	# next to the VM's disks, as uid 65534; delete removes the chroot.
	mkdir -p $BANGER_HOME/config
	printf 'firecracker_bin = "%s"\njailer_bin = "%s"\n' "$BANGER_FIRECRACKER_BIN" "$BANGER_JAILER_BIN" >$BANGER_HOME/config/config.toml
	t=$(up)
	if ! banger vm create --name c-jailed --image busybox --vmm firecracker --memory 256; then
		banger vm logs c-jailed
		for f in $(find $BANGER_HOME -name 'firecracker*.log'); do
			echo "== $f"
			tail -n 30 $f
		done
		return 1
	fi
	echo "cycle: jailed firecracker vm create $(elapsed "$t" "$(up)")"
	pid=$(ps -o pid,args | awk '/firecracker/ && /--id/ && !/awk/ { print $1; exit }')
	owner=$(awk '/^Uid:/ { print $2 }' /proc/$pid/status 2>/dev/null)
	jails=$(ls -d $BANGER_HOME/state/vms/*/jail/firecracker/* 2>/dev/null)
	echo "cycle: jailed firecracker pid $pid uid $owner jail $jails"
	[ "$owner" = 65534 ] && [ -n "$jails" ] || { echo "cycle: firecracker is not jailed"; return 1; }
	got=$(banger vm exec c-jailed -- uname -r) || return 1
	[ "$got" = "$rel" ] || { echo "cycle: jailed uname -r = $got, want $rel"; return 1; }
	banger vm stop c-jailed || return 1
	banger vm delete c-jailed || return 1
	if ls -d $BANGER_HOME/state/vms/*/jail 2>/dev/null; then
		echo "cycle: jail left after delete"
		return 1
	fi
	echo "cycle: jailed firecracker create/exec/stop/delete ok"
	banger daemon stop || true
}
want cycle && step cycle cycle

# The network check: bangerd's own host networking (bridge banger0, a tap
# per VM, nftables) inside L1, a Firecracker VM with --net private on it.
# L1 has no upstream, so what counts is host<->guest over the bridge: the
# guest's address, ping both ways, an HTTP fetch from a guest httpd, and
# the .vm name on the daemon's DNS (guest-side and host-side listeners).
net_vm() {
	vm=$1
	t=$(up)
	banger vm create --name $vm --image busybox --vmm firecracker --memory 256 --net private || { banger vm logs $vm | tail -n 30; return 1; }
	echo "net: $vm vm create $(elapsed "$t" "$(up)")"
	banger vm show $vm | tee /tmp/show
	ip=$(awk '$1 == "ip" { print $2 }' /tmp/show)
	grep -Eq 'net[[:space:]]+private' /tmp/show || { echo "net: $vm is not on --net private"; return 1; }
	case $ip in 172.30.0.*) ;; *) echo "net: $vm has no bridge address ($ip)"; return 1 ;; esac
	gw=172.30.0.1
	if [ "$2" = jailed ]; then
		pid=$(ps -o pid,args | awk '/firecracker/ && /--id/ && !/awk/ { print $1; exit }')
		owner=$(awk '/^Uid:/ { print $2 }' /proc/$pid/status 2>/dev/null)
		echo "net: $vm firecracker pid $pid runs as uid $owner"
		[ "$owner" = 65534 ] || { echo "net: $vm is not jailed"; return 1; }
	fi
	ls -l /sys/class/net/ | grep -o 'banger0-[0-9]*' | sort -u | tr '\n' ' '
	echo "(taps)"
	banger vm exec $vm -- ip -4 addr show dev eth0 || return 1
	t=$(up)
	ping -c 3 -W 5 $ip || { echo "net: host cannot ping $vm at $ip"; return 1; }
	echo "net: $vm host->guest ping ok $(elapsed "$t" "$(up)")"
	banger vm exec $vm -- ping -c 2 -W 5 $gw || { echo "net: $vm cannot ping the host at $gw"; return 1; }
	echo "net: $vm guest->host ping ok"
	banger vm exec $vm -- sh -c "mkdir -p /tmp/www && echo banger-net-$vm >/tmp/www/index.html && httpd -p 8080 -h /tmp/www" || return 1
	t=$(up)
	got=""
	# busybox wget crashes in L1 (static glibc meets L1's copied libraries);
	# nc speaks plain HTTP/1.0 well enough.
	for i in 1 2 3 4 5; do
		got=$(printf 'GET /index.html HTTP/1.0\r\n\r\n' | nc -w 5 $ip 8080 | tail -n 1)
		[ "$got" = "banger-net-$vm" ] && break
		sleep 1
	done
	[ "$got" = "banger-net-$vm" ] || { echo "net: http://$ip:8080/ from the host gave '$got'"; return 1; }
	echo "net: $vm host->guest http ok $(elapsed "$t" "$(up)")"
	# .vm names: the guest listener on the bridge, the host one on loopback.
	if nslookup $vm.vm $gw >/tmp/ns 2>&1 && grep -q "$ip" /tmp/ns; then
		echo "net: $vm.vm resolves to $ip on $gw:53"
	else
		cat /tmp/ns
		echo "net: $vm.vm does not resolve on $gw:53"
		return 1
	fi
	if nslookup $vm.vm 127.0.0.1:42069 >/tmp/ns 2>&1 && grep -q "$ip" /tmp/ns; then
		echo "net: $vm.vm resolves to $ip on 127.0.0.1:42069"
	else
		cat /tmp/ns
		echo "net: $vm.vm does not resolve on the host listener (not fatal)"
	fi
	if banger vm exec $vm -- nslookup $vm.vm >/tmp/ns 2>&1 && grep -q "$ip" /tmp/ns; then
		echo "net: $vm.vm resolves to $ip inside the guest"
	else
		cat /tmp/ns
		echo "net: $vm.vm does not resolve inside the guest"
		return 1
	fi
	t=$(up)
	banger vm stop $vm || return 1
	echo "net: $vm vm stop $(elapsed "$t" "$(up)")"
	banger vm delete $vm || return 1
	echo "net: $vm private networking ok"
}
net() {
	export BANGER_HOME=/root/bh BANGER_DAEMON_BIN=/lab/bin/bangerd
	mkdir -p $BANGER_HOME/config
	printf 'firecracker_bin = "%s"\n' "$BANGER_FIRECRACKER_BIN" >$BANGER_HOME/config/config.toml
	banger daemon stop >/dev/null 2>&1
	if ! banger image show busybox >/dev/null 2>&1; then
		deb=$(ls /var/cache/banger-test/linux-image-*.deb | head -n1)
		banger kernel import debian-cloud --from-deb "$deb" || return 1
		banger image register --name busybox --rootfs /lab/busybox.ext4 --kernel-ref debian-cloud || return 1
		banger image promote busybox || return 1
	fi
	banger network || true
	net_vm n-fc || return 1
	banger daemon stop || true
	[ -n "${BANGER_JAILER_BIN:-}" ] || return 0
	printf 'firecracker_bin = "%s"\njailer_bin = "%s"\n' "$BANGER_FIRECRACKER_BIN" "$BANGER_JAILER_BIN" >$BANGER_HOME/config/config.toml
	net_vm n-jail jailed
	rc=$?
	banger vm delete n-jail >/dev/null 2>&1
	banger daemon stop || true
	return $rc
}
want net && step net net

finish
