#!/bin/sh
# guest-run.sh — runs inside the VM (started by vagent-vm.service from the
# 9p share mounted at /host): for each placement of the agent, `vagent
# check` and the sandbox tests; results go to /host/results, one line per
# step in summary.txt ("PASS|FAIL placement step"), then the VM powers off.
set -u
share=/host
R=$share/results
mkdir -p "$R"
date -u +%FT%TZ > "$R/started"          # the host's watchdog waits for this
exec >"$R/guest.log" 2>&1
echo "guest: $(uname -r), $(systemctl --version | head -n1)"
echo "cgroup: $(grep cgroup /proc/self/mountinfo)"
echo "root controllers: $(cat /sys/fs/cgroup/cgroup.controllers)"
: > "$R/summary.txt"
export PATH=/usr/sbin:/usr/bin:/sbin:/bin CI=true
VM_SANDBOX_RUN=. VM_SANDBOX_SKIP= VM_PLACEMENTS="systemd-delegate private-ns kubernetes-pod pids-only rootless"
[ -f "$share/run.env" ] && . "$share/run.env"  # written by test-vm.sh
export VM_SANDBOX_RUN VM_SANDBOX_SKIP

# The host's test-image cache (the Arch-like image), when shared.
if mount -t 9p -o trans=virtio,version=9p2000.L,msize=1048576 testimages /testimages 2>/dev/null; then
	echo "test images: $(ls /testimages | tr '\n' ' ')"
else
	rmdir /testimages 2>/dev/null
	echo "no test-image share: the real build is skipped"
fi

# A minbase root has no /etc/hosts; every host the agent runs on has one.
[ -f /etc/hosts ] || printf '127.0.0.1\tlocalhost\n::1\tlocalhost\n' > /etc/hosts

# The VM has no network card (-nic none); a build host has an interface with
# a default route, which pasta (the builds' isolated network) copies into
# each build. A dummy interface stands for it; nothing answers behind it.
modprobe dummy 2>/dev/null
if ip link add uplink type dummy && ip addr add 10.0.2.15/24 dev uplink && ip link set uplink up &&
	ip route add default via 10.0.2.2 dev uplink; then
	echo "network: $(ip -br addr show uplink), $(ip route show default)"
else
	echo "network: no default route (the isolated network's tests will fail)"
fi

# Each placement runs in a systemd service with Delegate=yes: the agent's
# own unit (contrib/systemd), or the container runtime's (docker, podman
# and containerd run containers in delegated cgroups) below which
# guest-placement.sh builds the container's cgroups and moves itself in.
# (systemctl talks to systemd's private socket: no D-Bus needed.)
for p in $VM_PLACEMENTS; do
	[ "$p" = rootless ] && continue # below: an ordinary user's
	cat > "/run/systemd/system/vagent-vm-$p.service" <<-UNIT
	[Service]
	Type=oneshot
	TimeoutStartSec=infinity
	Delegate=yes
	Environment=PATH=$PATH CI=true "VM_SANDBOX_RUN=$VM_SANDBOX_RUN" "VM_SANDBOX_SKIP=$VM_SANDBOX_SKIP"
	ExecStart=/bin/sh $share/guest-placement.sh $p
	StandardOutput=file:$R/$p.log
	StandardError=inherit
	UNIT
	systemctl daemon-reload
	systemctl start "vagent-vm-$p.service"
	echo "placement $p: $(systemctl show -p Result --value "vagent-vm-$p.service")"
	cat "$R/$p.summary" >> "$R/summary.txt"
done

# Rootless: an ordinary user's agent, in a systemd user service with
# Delegate=yes and outside one (guest-rootless.sh).
case " $VM_PLACEMENTS " in *" rootless "*)
	sh "$share/guest-rootless.sh" > "$R/rootless.log" 2>&1
	echo "placement rootless: $(grep -c '^PASS' "$R/rootless.summary" 2>/dev/null) passed"
	cat "$R/rootless.summary" >> "$R/summary.txt" 2>/dev/null ;;
esac

# Nothing of the agents' is left anywhere but their (empty) leaves.
# (Manager parents are vagent-<hash> or the tests' vagent-test-*, runs
# vagent-<id>; the harness's own units are vagent-vm*.service.)
left=$(find /sys/fs/cgroup -type d \( -name 'vagent-test-*' -o -regex '.*/vagent-[0-9a-f]+' \))
echo "leftover cgroups: ${left:-none}"
if [ -z "$left" ]; then echo "PASS all no-leftover-cgroups" >> "$R/summary.txt"
else echo "FAIL all no-leftover-cgroups" >> "$R/summary.txt"; fi
sync
echo done > "$R/finished"
