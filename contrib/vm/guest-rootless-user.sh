#!/bin/sh
# guest-rootless-user.sh MODE — inside the VM, as the ordinary user of the
# rootless placement: MODE "delegated" runs in a systemd user service with
# Delegate=yes, "undelegated" from a root shell with runuser. Writes
# "PASS|FAIL rootless-MODE STEP" lines to ~/results/MODE.summary.
set -u
mode=$1
share=/host
out=$HOME/results
S=$out/$mode.summary
: > "$S"
step() { # name command...
	n=$1; shift
	echo "=== step $n: $*"
	if "$@"; then echo "PASS rootless-$mode $n" >> "$S"; else echo "FAIL rootless-$mode $n" >> "$S"; fi
}
exec >"$out/rootless-$mode.log" 2>&1
echo "rootless $mode: uid $(id -u), cgroup $(cat /proc/self/cgroup)"
# In a unit that runs vagent itself (contrib/systemd/vagent-user.service)
# the agent is its delegated cgroup's only process. Here this script is the
# unit's main process, so, delegated, the script moves to a leaf of its
# own, lets the unit's cgroup delegate its controllers to its children,
# and starts each vagent and test binary alone in a child cgroup (alone).
alone=
if [ "$mode" = delegated ]; then
	cg=/sys/fs/cgroup$(sed -n 's/^0:://p' /proc/self/cgroup)
	mkdir -p "$cg/harness" && echo $$ > "$cg/harness/cgroup.procs"
	echo "+memory +pids +cpu" > "$cg/cgroup.subtree_control" || echo "enabling controllers in $cg failed"
	cat > "$out/alone.sh" <<ALONE
#!/bin/sh
d=$cg/run-\$\$
mkdir "\$d" && echo \$\$ > "\$d/cgroup.procs" && exec "\$@"
ALONE
	alone="sh $out/alone.sh"
fi
cfg=$HOME/limits.yaml
cat > "$cfg" <<YAML
address: http://127.0.0.1:1
api_key: unused-rootless-vm-key
build_limits: {memory: 512MiB, pids: 256, cpus: 1, cpu_weight: 100}
YAML
check=$out/rootless-$mode-check.log
$alone "$share/bin/vagent" check -data-dir "$HOME/.local/share/vagent" > "$out/rootless-$mode-check-plain.log" 2>&1
sandbox_log=$out/rootless-$mode-sandbox-tests.log
case $mode in
delegated)
	# vagent check with build_limits: its probe build reads them back.
	step check-build-limits sh -c "$alone '$share/bin/vagent' check --config '$cfg' > '$check' 2>&1; cat '$check';
		grep -q '^ok  *build limits  *a build container in .* saw memory.max=536870912, .*pids.max=256' '$check' &&
		grep -q '^ok  *cgroups  *cgroup v2, delegated to the agent: memory, pids, cpu' '$check'"
	step check-plain sh -c "cat '$out/rootless-$mode-check-plain.log'; grep -q 'this host can run vagent builds' '$out/rootless-$mode-check-plain.log'"
	;;
undelegated)
	step check-refuses-limits sh -c "'$share/bin/vagent' check --config '$cfg' > '$check' 2>&1; cat '$check';
		grep -q '^MISSING  *build limits .*memory (controller \"memory\"), pids (controller \"pids\")' '$check' &&
		grep -q 'Delegate=yes' '$check'"
	step check-plain-passes sh -c "cat '$out/rootless-$mode-check-plain.log'; grep -q 'this host can run vagent builds' '$out/rootless-$mode-check-plain.log'"
	;;
esac
step sandbox-limits sh -c "VAGENT_VM_ROOTLESS=$mode $alone '$share/bin/sandbox.test' -test.v -test.timeout 10m -test.run '^TestRootlessLimits\$' > '$sandbox_log' 2>&1; rc=\$?; cat '$sandbox_log'; exit \$rc"
if [ "$mode" = delegated ]; then
	# The empty run cgroups (and what vagent made below them), deepest first.
	find "$cg" -mindepth 1 -depth -type d -path "$cg/run-*" -exec rmdir {} + 2>/dev/null
fi
cat "$S"
