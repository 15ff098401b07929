#!/bin/sh
# guest-rootless.sh — inside the VM, as root: the rootless placement. An
# ordinary user with subordinate ids (docs/rootless.md's setup) runs the
# agent's checks in a systemd user service with Delegate=yes (limits must
# apply) and outside one, from a root shell with runuser (a configured limit
# must be refused by name). Appends "PASS|FAIL rootless STEP" lines to
# /host/results/rootless.summary.
set -u
share=/host
R=$share/results
S=$R/rootless.summary
: > "$S"
user=vagentu
# docs/rootless.md's three commands, as the administrator runs them.
id "$user" >/dev/null 2>&1 || useradd --create-home --shell /bin/sh "$user"
grep -q "^$user:" /etc/subuid || usermod --add-subuids 100000-165535 --add-subgids 100000-165535 "$user"
# Without udev (a minbase guest) /dev/net/tun is 0600; udev makes it 0666.
chmod 0666 /dev/net/tun
uid=$(id -u "$user")
home=$(getent passwd "$user" | cut -d: -f6)
echo "rootless: user $user ($uid), $(grep "^$user:" /etc/subuid), home $home"
if ! systemctl start "user@$uid.service"; then
	echo "starting user@$uid.service failed:"
	journalctl --no-pager -b -u "user@$uid.service" -u "user-runtime-dir@$uid.service" | tail -n 40
fi
rt=/run/user/$uid
out=$home/results
rm -rf "$out"
runuser -u "$user" -- mkdir -p "$out" "$home/.config/systemd/user"
# The unit of the tests: Delegate=yes as contrib/systemd/vagent-user.service.
cat > "$home/.config/systemd/user/vagent-vm-rootless.service" <<UNIT
[Service]
Type=oneshot
TimeoutStartSec=infinity
Delegate=yes
Environment=PATH=/usr/sbin:/usr/bin:/sbin:/bin CI=true
ExecStart=/bin/sh $share/guest-rootless-user.sh delegated
UNIT
cp "$share/vagent-user.service" "$home/.config/systemd/user/vagent.service"
# Where the unit runs vagent from (docs/rootless.md's install step).
runuser -u "$user" -- install -D -m 0755 "$share/bin/vagent" "$home/.local/bin/vagent"
chown -R "$user:" "$home/.config"
asuser() { runuser -u "$user" -- env XDG_RUNTIME_DIR="$rt" HOME="$home" PATH=/usr/sbin:/usr/bin:/sbin:/bin CI=true "$@"; }
# contrib/systemd/vagent-user.service as the user manager reads it.
if asuser systemd-analyze --user verify "$home/.config/systemd/user/vagent.service" > "$R/rootless-unit.log" 2>&1; then
	echo "PASS rootless user-unit-verifies" >> "$S"
else
	echo "FAIL rootless user-unit-verifies" >> "$S"; cat "$R/rootless-unit.log"
fi
asuser systemctl --user daemon-reload
asuser systemctl --user start vagent-vm-rootless.service
echo "delegated unit: $(asuser systemctl --user show -p Result --value vagent-vm-rootless.service)"
# Outside a delegated cgroup: this root unit's cgroup is not the user's.
asuser sh "$share/guest-rootless-user.sh" undelegated
cp "$out"/* "$R/" 2>/dev/null
cat "$out"/*.summary >> "$S" 2>/dev/null
cat "$S"
