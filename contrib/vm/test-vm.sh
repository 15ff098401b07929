#!/bin/sh
# test-vm.sh — boot Debian 12's kernel with unified cgroup v2 under QEMU and
# run, for each placement of the agent (systemd service with Delegate=yes,
# root of a private cgroup namespace, Kubernetes-style pod cgroup, only pids
# delegated, an ordinary user's systemd user service — rootless),
# `vagent check` and the sandbox tests inside it. See README.md.
#
# Needs bin/vagent and bin/vm/sandbox.test (the Makefile's test-vm target
# builds them). Exits non-zero when any step fails; the report is
# $VM_OUT/results/summary.txt with one "PASS|FAIL placement step" line each.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
top=$(cd "$here/../.." && pwd)
VM_CACHE=${VM_CACHE:-/var/cache/vagent/vm}
VM_OUT=${VM_OUT:-$top/bin/vm}
VM_MEM=${VM_MEM:-4G}
VM_SMP=${VM_SMP:-2}
# The guest script must start within this long (TCG boots in ~30 s; one boot
# in eight livelocks there): otherwise the VM is killed and booted again, once.
VM_START_TIMEOUT=${VM_START_TIMEOUT:-240}
VM_KVM_START_TIMEOUT=${VM_KVM_START_TIMEOUT:-60}
VM_TIMEOUT=${VM_TIMEOUT:-3600} # the whole run
VM_SANDBOX_RUN=${VM_SANDBOX_RUN:-.}
# The placements to run (all by default; e.g. VM_PLACEMENTS=rootless).
VM_PLACEMENTS=${VM_PLACEMENTS:-systemd-delegate private-ns kubernetes-pod pids-only rootless}
# The agent binary to check (e.g. another revision's, to compare).
VM_VAGENT=${VM_VAGENT:-$top/bin/vagent}
# Tests with wall-clock bounds written for a real host (output latency,
# stop within deadline + grace): under TCG, 4-5x slower and on a loaded
# machine, they fail on timing, not on cgroups. The host runs them.
VM_SANDBOX_SKIP=${VM_SANDBOX_SKIP-TestOutputIsLiveAndOrdered|TestTimeoutKillsEverything}

t0=$(date +%s)
guest=$("$here/guest-image.sh" "$VM_CACHE")
echo "guest image: $guest ($(( $(date +%s) - t0 )) s)"

share=$VM_OUT/share
rm -rf "$share"
mkdir -p "$share/bin" "$share/results"
cp "$VM_VAGENT" "$share/bin/vagent"
cp "$VM_OUT/sandbox.test" "$share/bin/"
# The real build (cmd/vagent's TestRunBuildLimits) needs the test images.
testimages=
if [ -f "$VM_OUT/vagent.test" ]; then
	cp "$VM_OUT/vagent.test" "$share/bin/"
	cache=${VAGENT_TESTIMAGE_CACHE:-/var/cache/vagent/testimages}
	[ -d "$cache" ] && testimages="-virtfs local,path=$cache,mount_tag=testimages,security_model=passthrough"
fi
cp "$here/guest-run.sh" "$here/guest-placement.sh" "$here/guest-rootless.sh" "$here/guest-rootless-user.sh" \
	"$top/contrib/systemd/vagent-user.service" "$share/"
printf "VM_SANDBOX_RUN='%s'\nVM_SANDBOX_SKIP='%s'\nVM_PLACEMENTS='%s'\n" "$VM_SANDBOX_RUN" "$VM_SANDBOX_SKIP" "$VM_PLACEMENTS" > "$share/run.env"

qpid=
cleanup() { [ -n "$qpid" ] && kill "$qpid" 2>/dev/null; true; }
trap cleanup EXIT INT TERM

# boot ACCEL TIMEOUT: start the VM; 0 when the guest script started in time.
boot() {
	rm -f "$share/results/started"
	case $1 in
	kvm) accel="-accel kvm -cpu host" ;;
	tcg) accel="-accel tcg,thread=multi,tb-size=512 -cpu max" ;;
	esac
	console=$VM_OUT/console-$1-$(date +%s).log
	echo "booting ($1), console: $console"
	# shellcheck disable=SC2086
	qemu-system-x86_64 $accel -m "$VM_MEM" -smp "$VM_SMP" \
		-kernel "$guest/vmlinuz" -initrd "$guest/initrd.img" \
		-append "root=/dev/vda rw console=ttyS0 systemd.unified_cgroup_hierarchy=1 panic=-1" \
		-drive "file=$guest/guest.img,format=raw,if=virtio,cache=unsafe" -snapshot \
		-virtfs "local,path=$share,mount_tag=host,security_model=passthrough" $testimages \
		-nic none -display none -no-reboot -serial "file:$console" &
	qpid=$!
	waited=0
	while [ ! -f "$share/results/started" ]; do
		if ! kill -0 "$qpid" 2>/dev/null; then
			echo "qemu exited before the guest script started"; tail -n 20 "$console"; qpid=; return 1
		fi
		if [ "$waited" -ge "$2" ]; then
			echo "guest script not started after ${2}s: killing the VM"; tail -n 20 "$console"
			kill "$qpid"; wait "$qpid" 2>/dev/null || true; qpid=; return 1
		fi
		sleep 2; waited=$((waited + 2))
	done
	echo "guest script started after ~${waited}s"
}

started=false
if [ -r /dev/kvm ] && [ -w /dev/kvm ] && grep -qwE 'vmx|svm' /proc/cpuinfo && boot kvm "$VM_KVM_START_TIMEOUT"; then
	started=true
elif boot tcg "$VM_START_TIMEOUT" || boot tcg "$VM_START_TIMEOUT"; then
	started=true
fi
$started || { echo "test-vm: the guest did not start"; exit 1; }

# The guest powers off when done; the whole run is bounded.
left=$VM_TIMEOUT
while kill -0 "$qpid" 2>/dev/null && [ "$left" -gt 0 ]; do sleep 5; left=$((left - 5)); done
if kill -0 "$qpid" 2>/dev/null; then echo "test-vm: timed out after ${VM_TIMEOUT}s"; kill "$qpid"; fi
wait "$qpid" 2>/dev/null || true
qpid=

R=$share/results
rm -rf "$VM_OUT/results"; cp -r "$R" "$VM_OUT/results"
echo "--- test-vm report ($VM_OUT/results; wall time $(( $(date +%s) - t0 )) s)"
cat "$R/summary.txt" 2>/dev/null || true
if [ ! -f "$R/finished" ]; then
	echo "test-vm: FAIL — the guest did not finish (see $VM_OUT/results/guest.log and the console log)"
	exit 1
fi
if grep -q '^FAIL' "$R/summary.txt" || ! grep -q '^PASS' "$R/summary.txt"; then
	echo "test-vm: FAIL"; exit 1
fi
echo "test-vm: PASS ($(grep -c '^PASS' "$R/summary.txt") steps)"
