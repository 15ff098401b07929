package builder

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"strings"

	"github.com/vieter-v/vagent/internal/pacman"
)

// setupScript runs as root in the sandbox, on an overlay of the base image,
// with the packages as its arguments. Everything configurable arrives in
// the environment or as arguments, never inside the script's text, so no
// value is ever parsed as shell code. It must work with dash, bash and
// busybox sh.
const setupScript = `set -eu
say() { printf '==> %s\n' "$*"; }
die() { printf '==> ERROR: %s\n' "$*" >&2; exit 1; }
conf=/etc/pacman.conf
command -v pacman >/dev/null 2>&1 || die "pacman not found: not a pacman-based image"
[ -f "$conf" ] || die "$conf not found"

if [ -n "${VAGENT_MIRRORLIST:-}" ]; then
	# A mirror list no repository includes would be ignored in silence.
	grep -Eq '^[[:space:]]*Include[[:space:]]*=[[:space:]]*/etc/pacman\.d/mirrorlist[[:space:]]*$' "$conf" ||
		die "the Pacman mirrors (pacman_mirrors, --pacman-mirror) would not be used: no repository in the base image's $conf includes /etc/pacman.d/mirrorlist (its repositories name their servers themselves; add repositories with pacman_repos or --repo-url instead, or use a base image whose repositories include the mirror list)"
	say "writing /etc/pacman.d/mirrorlist"
	mkdir -p /etc/pacman.d
	printf '%s' "$VAGENT_MIRRORLIST" >/etc/pacman.d/mirrorlist
fi
if [ -n "${VAGENT_REPOS:-}" ]; then
	say "adding repositories to $conf"
	printf '\n%s' "$VAGENT_REPOS" >>"$conf"
fi

# pacman 7 downloads in a sandbox of its own that fails in containers. Ask
# pacman-conf whether it knows the option (pacman 6 answers "unknown
# directive" and fails) rather than guessing from the distribution.
if pacman-conf DisableSandbox >/dev/null 2>&1; then
	if [ -z "$(pacman-conf DisableSandbox)" ]; then
		say "pacman supports DisableSandbox: turning it on"
		sed -i '/^[[:space:]]*\[options\][[:space:]]*$/a DisableSandbox' "$conf"
		[ -n "$(pacman-conf DisableSandbox)" ] || die "could not turn on DisableSandbox in $conf"
	else
		say "pacman's download sandbox is already off"
	fi
else
	say "pacman has no DisableSandbox option: nothing to turn off"
fi

# Make the base fit for pacman: images as they come (archlinux,
# archlinuxarm, manjaro, artix and images trimmed from them) lack some of
# what pacman and makepkg rely on. docs/build.md lists each item.
say "checking the root filesystem for pacman"
# pacman reads /etc/mtab (its disk-space check; without it every
# transaction fails). Arch ships it as a symlink.
if [ ! -e /etc/mtab ]; then
	say "/etc/mtab missing: linking it to ../proc/self/mounts"
	rm -f /etc/mtab
	ln -s ../proc/self/mounts /etc/mtab
fi
# pacman's database, sync and cache directories (images trimmed with
# rm -rf /var/lib/pacman/sync or /var/cache/pacman lose them).
dbpath=$(pacman-conf DBPath 2>/dev/null || true)
mkdir -p "${dbpath:-/var/lib/pacman/}local" "${dbpath:-/var/lib/pacman/}sync"
cachedirs=$(pacman-conf CacheDir 2>/dev/null || true)
for d in ${cachedirs:-/var/cache/pacman/pkg/}; do mkdir -p "$d"; done
# Scratch directories world-writable and sticky (makepkg and its tools
# write there as builder).
for d in /tmp /var/tmp; do
	mkdir -p "$d"
	chmod 1777 "$d"
done
# root and its group: sudo, su and install scriptlets look them up.
if ! grep -q '^root:' /etc/passwd 2>/dev/null; then
	say "adding root to /etc/passwd"
	printf 'root:x:0:0:root:/root:/bin/sh\n' >>/etc/passwd
fi
if ! grep -q '^root:' /etc/group 2>/dev/null; then
	say "adding root to /etc/group"
	printf 'root:x:0:root\n' >>/etc/group
fi
mkdir -p /root
# A keyring: archlinuxarm's rootfs, and images that removed theirs, ship
# the keyring packages' keys but no initialised /etc/pacman.d/gnupg, so
# every signed package fails with "keyring is not writable". Initialise
# and populate it from the installed keyrings (archlinux, archlinuxarm,
# manjaro, artix...). Repositories with SigLevel Never or Optional do not
# need it.
if [ ! -s /etc/pacman.d/gnupg/pubring.gpg ] && [ ! -s /etc/pacman.d/gnupg/pubring.kbx ]; then
	if ls /usr/share/pacman/keyrings/*.gpg >/dev/null 2>&1 && command -v pacman-key >/dev/null 2>&1; then
		say "no pacman keyring: pacman-key --init; pacman-key --populate"
		pacman-key --init
		pacman-key --populate
	else
		say "no pacman keyring and no keyring package: only unsigned or SigLevel-Optional repositories work"
	fi
fi

say "pacman -Syu --needed --noconfirm $*"
pacman -Syu --needed --noconfirm --noprogressbar "$@"
if [ -d /var/cache/pacman/pkg ]; then
	find /var/cache/pacman/pkg -maxdepth 1 -type f -name '*.pkg.tar*' -exec rm -f {} \;
fi

say "user and group builder (1000:1000)"
grep -q '^builder:' /etc/group || groupadd -g 1000 builder
grep -q '^builder:' /etc/passwd || useradd -m -u 1000 -g builder builder
[ "$(id -u builder)" = 1000 ] || die "user builder exists with uid $(id -u builder), not 1000"
[ "$(id -g builder)" = 1000 ] || die "user builder has primary gid $(id -g builder), not 1000"
gid=$(grep '^builder:' /etc/group | cut -d: -f3)
[ "$gid" = 1000 ] || die "group builder exists with gid $gid, not 1000"

say "password-less sudo for builder"
line='builder ALL=(ALL) NOPASSWD: ALL'
if [ "$(cat /etc/sudoers.d/builder 2>/dev/null || true)" != "$line" ]; then
	mkdir -p /etc/sudoers.d
	printf '%s\n' "$line" >/etc/sudoers.d/builder
	chmod 0440 /etc/sudoers.d/builder
fi

say "/build owned by builder"
mkdir -p /build
chown builder:builder /build
say "builder setup done"
`

// setupPath is the PATH of the setup run, the reference agent's.
const setupPath = "/sbin:/bin:/usr/sbin:/usr/bin:/usr/local/sbin:/usr/local/bin:/usr/bin/site_perl:/usr/bin/vendor_perl:/usr/bin/core_perl"

// setupArgs returns the command line of the setup run.
func (o *options) setupArgs() []string {
	return append([]string{"/bin/sh", "-c", setupScript, "vagent-setup"}, o.packages...)
}

// setupEnv returns the environment of the setup run.
func (o *options) setupEnv() []string {
	env := []string{"PATH=" + setupPath, "HOME=/root", "LC_ALL=C", "TERM=dumb"}
	if s := pacman.MirrorList(o.mirrors); s != "" {
		env = append(env, "VAGENT_MIRRORLIST="+s)
	}
	if s := pacman.Conf(o.repos); s != "" {
		env = append(env, "VAGENT_REPOS="+s)
	}
	return env
}

// recipe identifies what a builder is made of besides its base: a builder
// made with another recipe is stale.
func (o *options) recipe() string {
	h := sha256.New()
	fmt.Fprintf(h, "script\x00%s\x00packages", setupScript)
	for _, p := range o.packages {
		fmt.Fprintf(h, "\x00%s", p)
	}
	fmt.Fprintf(h, "\x00env")
	for _, e := range o.setupEnv() {
		fmt.Fprintf(h, "\x00%s", e)
	}
	return hex.EncodeToString(h.Sum(nil))[:16]
}

// setupCommand describes the setup in the image history.
func (o *options) setupCommand() string {
	s := "/etc/mtab, pacman directories, /tmp modes, root entries, keyring when missing; " +
		"pacman -Syu --needed --noconfirm " + strings.Join(o.packages, " ") +
		"; builder user and group 1000:1000 with password-less sudo; /build owned by builder"
	if len(o.mirrors) > 0 {
		s = "mirror list; " + s
	}
	if len(o.repos) > 0 {
		names := make([]string, len(o.repos))
		for i, r := range o.repos {
			names[i] = r.Name
		}
		s = "repositories " + strings.Join(names, ", ") + "; " + s
	}
	return "vagent builder setup: " + s
}
