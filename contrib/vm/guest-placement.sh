#!/bin/sh
# guest-placement.sh PLACEMENT — inside the VM: put this shell where an
# agent would stand, then run `vagent check` and the sandbox tests there.
# Appends "PASS|FAIL PLACEMENT STEP" lines to /host/results/PLACEMENT.summary.
set -u
p=$1
share=/host
R=$share/results
S=$R/$p.summary
cg=/sys/fs/cgroup
# The delegated unit's cgroup (before any move).
unit=$(sed -n 's/^0:://p' /proc/self/cgroup)
U=$cg$unit
# place DIR CONTROLLERS: make $U/DIR, move this shell into it and enable
# CONTROLLERS on the way down (as a container runtime or kubelet does).
place() {
	mkdir -p "$U/$1"
	echo $$ > "$U/$1/cgroup.procs"
	d=$U
	for e in $(echo "$1" | tr / ' '); do
		echo "$2" > "$d/cgroup.subtree_control"
		d=$d/$e
		[ "$d" = "$U/$1" ] && break
	done
}
case $p in
systemd-delegate) ;; # the agent's own unit, Delegate=yes, as contrib/systemd
private-ns)
	# The root of a private cgroup namespace (docker run --privileged,
	# podman): the container's cgroup, unshare --cgroup, cgroup2 remounted
	# so the agent sits in the namespace's root cgroup.
	if [ "${2:-}" != entered ]; then
		place ctr "+memory +pids +cpu"
		exec unshare --cgroup --mount --propagation private /bin/sh "$0" "$p" entered
	fi
	umount -l $cg && mount -t cgroup2 -o nsdelegate,memory_recursiveprot cgroup2 $cg ;;
kubernetes-pod)
	# A Kubernetes privileged pod: the host's cgroup namespace, the agent
	# in its container's cgroup below the pod's.
	place kubepods/pod1/ctr "+memory +pids +cpu" ;;
pids-only)
	# Only the pids controller delegated to the agent's cgroup.
	place pidsonly/agent "+pids" ;;
esac
own=$(sed -n 's/^0:://p' /proc/self/cgroup)
echo "placement $p: own cgroup $own (namespace view), available: $(cat $cg$own/cgroup.controllers)"
: > "$S"
step() { # name command...: one summary line per step
	n=$1; shift
	echo "=== step $n: $*"
	if "$@"; then echo "PASS $p $n" >> "$S"; else echo "FAIL $p $n" >> "$S"; fi
}
tests_log=$R/$p-sandbox-tests.log
# Per-limit lines from the test that reads each limit inside the build.
limits() {
	for l in memory memory_without_swap memory+swap pids cpu_quota cpu_weight; do
		if grep -q -- "--- PASS: TestLimitsObservedInside/$l " "$tests_log"; then
			echo "PASS $p limit-$l" >> "$S"
		elif grep -q -- "TestLimitsObservedInside/$l " "$tests_log"; then
			echo "FAIL $p limit-$l" >> "$S"
		fi
	done
}
# After every step: nothing of ours left below the agent's cgroup but its
# leaf (run cgroups and Manager parents are removed).
no_leftovers() {
	home=$own; [ "$(basename "$home")" = vagent-agent ] && home=$(dirname "$home")
	left=$(find "$cg$home" -mindepth 1 -type d ! -name vagent-agent)
	[ -z "$left" ] || { echo "left behind: $left"; return 1; }
}
case $p in
pids-only)
	step check-names-missing sh -c "$share/bin/vagent check -data-dir /var/lib/vagent-check-$p > $R/$p-check.log 2>&1;
		cat $R/$p-check.log; grep -q 'memory' $R/$p-check.log"
	step sandbox-tests sh -c "$share/bin/sandbox.test -test.v -test.timeout 20m \
		-test.run 'TestLimitsObservedInside/pids|TestPidsLimit|TestLimitUnavailableRefused' > $tests_log 2>&1"
	;;
*)
	step check sh -c "$share/bin/vagent check -data-dir /var/lib/vagent-check-$p > $R/$p-check.log 2>&1; rc=\$?; cat $R/$p-check.log; exit \$rc"
	run=${VM_SANDBOX_RUN:-.}
	[ "$p" = kubernetes-pod ] && run='TestLimitsObservedInside|TestPidsLimit|TestMemoryLimit|TestCrashRecovery|TestLimitUnavailableRefused'
	step sandbox-tests sh -c "$share/bin/sandbox.test -test.v -test.timeout 25m -test.run '$run' \
		-test.skip '$VM_SANDBOX_SKIP' > $tests_log 2>&1"
	# One real build with build_limits (vagent run against the test stack),
	# its PKGBUILD reading the limits from inside the build.
	if [ -x "$share/bin/vagent.test" ] && [ -d /testimages ] && [ "$p" != kubernetes-pod ]; then
		step real-build-limits sh -c "cd /tmp && VAGENT_TESTIMAGE_CACHE=/testimages $share/bin/vagent.test -test.v \
			-test.timeout 25m -test.run '^TestRunBuildLimits\$' > $R/$p-real-build.log 2>&1"
		grep -h 'limits seen inside the build' "$R/$p-real-build.log"
	fi
	;;
esac
limits
step no-leftover-cgroups no_leftovers
tail -n 3 "$tests_log"
cat "$S"
