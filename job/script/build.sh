#!/bin/bash
# vagent's build script: a constant embedded in the binary (package build).
# It runs as root in a fresh sandbox on a builder image; the control
# directory /run/vagent is mounted read-only. Job values arrive only as
# environment variables and are used as single arguments, never as code:
#
#   VAGENT_KIND    git, url, or dir (a local directory on /run/vagent-src)
#   VAGENT_URL     the git repository or the PKGBUILD URL
#   VAGENT_BRANCH  the git branch ("" = the default branch)
#   VAGENT_PATH    the directory of the clone holding the PKGBUILD ("" = top)
#   VAGENT_JOBS    N of MAKEFLAGS=-jN
#   VAGENT_OFFLINE 1 when build() and package() run offline: the agent cuts
#                  the network before it answers "build"
#
# /run/vagent holds repos.d/NN.conf (one pacman.conf section each, written
# by the agent from validated values), this script, git-credential (git's
# credential helper), credentials when the job's URL had a user or password
# (two lines, readable by root only: the agent took them out of
# VAGENT_URL, since every host user can read command lines), and two FIFOs:
# srcinfo (the .SRCINFO, length-prefixed, to the agent) and decision (one
# line from the agent: "build", "skip REASON" or "fail REASON").
set -uo pipefail
ctl=/run/vagent

# step announces a command as the reference agent's log does; arguments are
# quoted as a shell would read them, so no value can forge a log line.
step() {
	local a out='+'
	for a in "$@"; do out+=" $(printf '%q' "$a")"; done
	printf '%s\n' "$out"
}
run() {
	step "$@"
	"$@"
}
fail() {
	printf 'vagent: %s\n' "$*"
	exit 1
}
# srcinfo prints the part of a .SRCINFO the agent reads (pkgbase, pkgver,
# pkgrel, epoch, arch, every pkgname) from the PKGBUILD as makepkg --nobuild
# left it (pkgver() applied), sourced in a subshell after makepkg.conf as
# makepkg sources it; whatever the PKGBUILD prints goes to the log. It
# replaces makepkg --printsrcinfo, which loads all of libmakepkg first: about
# 4 s on a small VM against milliseconds. The agent validates every value.
srcinfo() (
	set +u
	# shellcheck disable=SC1091
	source /etc/makepkg.conf >&2 || exit
	# shellcheck disable=SC2034
	srcdir=$PWD/src pkgdir=$PWD/pkg startdir=$PWD
	# shellcheck disable=SC1091
	source ./PKGBUILD >&2 || exit
	local a n
	printf 'pkgbase = %s\n' "${pkgbase:-${pkgname[0]}}"
	printf '\tpkgver = %s\n\tpkgrel = %s\n' "$pkgver" "$pkgrel"
	if [[ -n $epoch ]]; then printf '\tepoch = %s\n' "$epoch"; fi
	for a in "${arch[@]}"; do printf '\tarch = %s\n' "$a"; done
	for n in "${pkgname[@]}"; do printf '\npkgname = %s\n' "$n"; done
)

if [[ ${1-} != --builder ]]; then
	# Root: the job's repository, an up-to-date system, the build directory.
	# Each repository once: a section the builder's pacman.conf has already
	# (a configured repository of the same name) is not added again.
	for f in "$ctl"/repos.d/*.conf; do
		[[ -e $f ]] || continue
		IFS= read -r section <"$f"
		if grep -qxF -- "$section" /etc/pacman.conf; then
			printf 'vagent: %s is in pacman.conf already; not added again\n' "$section"
			continue
		fi
		echo >>/etc/pacman.conf || exit
		step tee -a /etc/pacman.conf '<' "$f"
		tee -a /etc/pacman.conf <"$f" || exit
	done
	run pacman -Syu --needed --noconfirm || exit
	if [[ ! -d /build ]]; then
		run install -d -o builder -g builder -m 0755 /build || exit
	fi
	if [[ $VAGENT_KIND == dir ]]; then
		run cp -a /run/vagent-src/. /build/repo || exit
		run chown -R -h builder:builder /build/repo || exit
	fi
	home=$(getent passwd builder | cut -d: -f6)
	[[ -n $home ]] || fail "the image has no builder user"
	export HOME=$home USER=builder LOGNAME=builder
	# The URL's credentials go to the builder in its environment, which
	# only it and root can read; read's builtin keeps them off every
	# command line.
	if [[ -e $ctl/credentials ]]; then
		{ IFS= read -r VAGENT_URL_USER && IFS= read -r VAGENT_URL_PASSWORD; } <"$ctl/credentials" ||
			fail "cannot read the credentials of the job's URL"
		export VAGENT_URL_USER VAGENT_URL_PASSWORD
	fi
	exec setpriv --reuid=builder --regid=builder --init-groups -- /bin/bash "$ctl/build.sh" --builder
fi

# Builder: sources, dependencies, .SRCINFO, the agent's decision, the build.
cd /build || exit
export GIT_ALLOW_PROTOCOL=http:https:git:ssh GIT_TERMINAL_PROMPT=0 GIT_CONFIG_NOSYSTEM=1
case $VAGENT_KIND in
git)
	args=(git clone --single-branch --depth 1)
	[[ -z $VAGENT_BRANCH ]] || args+=("--branch=$VAGENT_BRANCH")
	if [[ -v VAGENT_URL_USER ]]; then
		# Only this helper (an empty value drops any other): it answers
		# for the URL's host alone.
		GIT_CONFIG_COUNT=2 GIT_CONFIG_KEY_0=credential.helper GIT_CONFIG_VALUE_0= \
			GIT_CONFIG_KEY_1=credential.helper GIT_CONFIG_VALUE_1=$ctl/git-credential \
			run "${args[@]}" -- "$VAGENT_URL" repo || exit
	else
		run "${args[@]}" -- "$VAGENT_URL" repo || exit
	fi
	;;
url)
	run mkdir repo || exit
	args=(curl --fail --silent --show-error --location --proto =http,https --proto-redir =http,https
		--max-redirs 10 --output repo/PKGBUILD)
	if [[ -v VAGENT_URL_USER ]]; then
		# curl reads "user" from a configuration on its standard input;
		# it sends it to the URL's host only, not after a redirect.
		cred=$VAGENT_URL_USER:$VAGENT_URL_PASSWORD
		cred=${cred//\\/\\\\}
		cred=${cred//\"/\\\"}
		run "${args[@]}" --config - --url "$VAGENT_URL" <<<"user = \"$cred\"" || exit
		unset cred
	else
		run "${args[@]}" --url "$VAGENT_URL" </dev/null || exit
	fi
	;;
dir) ;;
*) fail "unknown source kind" ;;
esac
unset VAGENT_URL_USER VAGENT_URL_PASSWORD

top=$(realpath -e -- repo) || exit
dir=$top
if [[ -n $VAGENT_PATH ]]; then
	dir=$(realpath -e -- "repo/$VAGENT_PATH") || fail "path $(printf '%q' "$VAGENT_PATH") is not in the repository"
	[[ $dir == "$top" || $dir == "$top"/* ]] || fail "path $(printf '%q' "$VAGENT_PATH") leaves the repository"
fi
run cd -- "$dir" || exit

export PKGDEST=/build/out
mkdir -p /build/out || exit
# Two passes: sources and dependencies first, with the network; with
# VAGENT_OFFLINE=1 the agent cuts it between the passes, so they stay two.
run makepkg --nobuild --syncdeps --needed --noconfirm || exit
step srcinfo
srcinfo >/build/.SRCINFO || exit
size=$(stat -c %s /build/.SRCINFO) || exit
{
	printf '%s\n' "$size"
	cat /build/.SRCINFO
} >"$ctl/srcinfo" || exit
IFS= read -r decision <"$ctl/decision" || fail "no decision from the agent"
case $decision in
build) ;;
skip\ *)
	printf 'vagent: skipping the build: %s\n' "${decision#skip }"
	exit 0
	;;
*) fail "${decision#fail }" ;;
esac

export MAKEFLAGS=-j$VAGENT_JOBS
offline=${VAGENT_OFFLINE:-0}
if [[ $offline == 1 ]]; then
	printf 'vagent: offline build (build_network.offline_build): the agent has cut the network; build() and package() run without it\n'
fi
step "MAKEFLAGS=$MAKEFLAGS" makepkg --syncdeps --needed --noconfirm --noextract
makepkg --syncdeps --needed --noconfirm --noextract
status=$?
if [[ $status -ne 0 && $offline == 1 ]]; then
	printf 'vagent: build() or package() failed without network (build_network.offline_build): downloads are not possible there; list every file the build needs in source=()\n'
fi
exit "$status"
