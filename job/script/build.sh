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
#   VAGENT_CHECK   true: compare the packages with the repositories'
#                  (vagent build --check, the checkpkg script)
#   VAGENT_SRCDEST the target's source cache, makepkg's SRCDEST (unset:
#                  none)
#   VAGENT_PASSES  2: makepkg --nobuild first even without pkgver() (the
#                  flow of earlier versions, for comparisons)
#   VAGENT_OFFLINE 1 when build() and package() run offline: the agent cuts
#                  the network before it answers "build"
#
# /run/vagent holds repos.d/NN.conf (one pacman.conf section each, written
# by the agent from validated values), this script, git-credential (git's
# credential helper), checkpkg, credentials when the job's URL had a user
# or password (two lines, readable by root only: the agent took them out
# of VAGENT_URL, since every host user can read command lines), install/
# (packages of vagent build -I, checked by the agent), exclude (a local
# source's paths the copy leaves out), and two FIFOs: srcinfo (the
# .SRCINFO, length-prefixed, to the agent) and decision (one line from the
# agent: "build", "skip REASON" or "fail REASON").
#
# With --inspect it opens a shell as the builder on the tree a build left
# (vagent build --inspect). A failed build names the step that failed in
# /build/.vagent-failed (see failed).
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
# fail_in is fail, recording the step that failed (see failed).
fail_in() {
	printf '%s\n' "$1" >/build/.vagent-failed 2>/dev/null
	shift
	fail "$@"
}
# failed records the step that failed, for the agent's summary (it reads
# /build/.vagent-failed from the build's upper directory and accepts known
# steps only), and exits with the status of the command before it.
failed() {
	local rc=$?
	record_failed "$1"
	exit "$rc"
}
record_failed() {
	printf '%s\n' "$1" >/build/.vagent-failed 2>/dev/null
}
# makepkg_run runs makepkg and returns its status; when it fails, it
# records the step makepkg
# names: the PKGBUILD function (prepare(), build(), check(), package(),
# pkgver()), the sources (download, checksums, signatures, extraction), the
# dependencies, or makepkg itself. Its output reaches the log unchanged
# through tee; a grep on the side keeps the last line that names a step
# (its pipe is the builder's: the log's pipe, the agent's, cannot be
# opened again by path as the builder).
makepkg_run() {
	local rc what out pid
	exec {out}> >(grep -aoE 'A failure occurred in [a-z_]+\(\)|Failure while downloading|Failure while creating working copy|did not pass the validity check|signatures could not be verified|was not found in the build directory|Failed to extract|Could not resolve all dependencies|Failed to install missing dependencies' |
		tail -n 1 >/build/.vagent-makepkg)
	pid=$!
	"$@" 2>&1 {out}>&- | tee /dev/fd/"$out"
	rc=${PIPESTATUS[0]}
	exec {out}>&-
	wait "$pid"
	((rc == 0)) && return 0
	what=$(</build/.vagent-makepkg)
	case $what in
	A\ failure\ occurred\ in\ *) what=${what#A failure occurred in } ;;
	Could* | Failed\ to\ install*) what=dependencies ;;
	?*) what=sources ;;
	*) what=makepkg ;;
	esac
	record_failed "$what"
	return "$rc"
}
# srcinfo prints the part of a .SRCINFO the agent reads (pkgbase, pkgver,
# pkgrel, epoch, arch, every pkgname) from the PKGBUILD as it is, or as
# makepkg --nobuild left it (pkgver() applied), sourced in a subshell after
# makepkg.conf as makepkg sources it, and marks a PKGBUILD with pkgver() in
# /build/.vagent-pkgver; whatever the PKGBUILD prints goes to the log. It
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
	# A pkgver() makes the version the sources' (see the passes below).
	if declare -F pkgver >/dev/null; then
		: >/build/.vagent-pkgver
	fi
	printf 'pkgbase = %s\n' "${pkgbase:-${pkgname[0]}}"
	printf '\tpkgver = %s\n\tpkgrel = %s\n' "$pkgver" "$pkgrel"
	if [[ -n $epoch ]]; then printf '\tepoch = %s\n' "$epoch"; fi
	for a in "${arch[@]}"; do printf '\tarch = %s\n' "$a"; done
	for n in "${pkgname[@]}"; do printf '\npkgname = %s\n' "$n"; done
)

# copy_source copies the local source on /run/vagent-src to /build/repo,
# leaving out the paths the agent listed in $ctl/exclude (relative,
# NUL-terminated: packages and build logs of earlier builds, the output
# directory). Directories on the way to a left-out path are copied entry
# by entry, all others whole.
copy_source() {
	local -A skip=() via=()
	local p
	if [[ -s $ctl/exclude ]]; then
		while IFS= read -r -d '' p; do
			skip[$p]=1
			while [[ $p == */* ]]; do
				p=${p%/*}
				via[$p]=1
			done
			via[.]=1
		done <"$ctl/exclude"
	fi
	if ((${#skip[@]} == 0)); then
		run cp -a /run/vagent-src/. /build/repo
		return
	fi
	printf '+ vagent: copy /run/vagent-src to /build/repo without %d output(s) of earlier builds\n' "${#skip[@]}"
	copy_dir .
}
copy_dir() {
	local rel=$1 e name r
	local src=/run/vagent-src/$rel dst=/build/repo/$rel
	mkdir -p -- "$dst" || return
	shopt -s dotglob nullglob
	for e in "$src"/*; do
		name=${e##*/}
		r=$name
		[[ $rel == . ]] || r=$rel/$name
		if [[ -n ${skip[$r]-} ]]; then
			continue
		elif [[ -n ${via[$r]-} && -d $e && ! -L $e ]]; then
			copy_dir "$r" || return
		else
			cp -a -- "$e" "$dst/" || return
		fi
	done
	shopt -u dotglob nullglob
	chmod --reference="$src" -- "$dst" && touch -h --reference="$src" -- "$dst"
}

if [[ ${1-} == --inspect ]]; then
	# vagent build --inspect: an interactive shell as the builder, on the
	# build's tree as the build left it, in the PKGBUILD's directory. The
	# terminal (the container's own) becomes the builder's, so that
	# programs that open /dev/tty work.
	home=$(getent passwd builder | cut -d: -f6)
	export HOME=${home:-/build} USER=builder LOGNAME=builder
	dir=/build
	if [[ -f /build/.vagent-dir ]]; then
		IFS= read -r d </build/.vagent-dir && [[ -d $d ]] && dir=$d
	fi
	cd -- "$dir" || exit
	if t=$(tty); then
		chown builder -- "$t"
	fi
	printf 'vagent: a shell as builder in %s, on the tree the build left (exit or Ctrl-D ends it; everything is removed then)\n' "$dir"
	exec setpriv --reuid=builder --regid=builder --init-groups -- env 'PS1=[vagent inspect \W]\$ ' /bin/bash --norc -i
fi

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
	run pacman -Syu --needed --noconfirm || failed upgrade
	# Local packages (vagent build -I), before the build's dependencies.
	if [[ -d $ctl/install ]]; then
		run pacman -U --noconfirm -- "$ctl"/install/* || failed install
	fi
	if [[ ! -d /build ]]; then
		run install -d -o builder -g builder -m 0755 /build || exit
	fi
	# The target's source cache (makepkg's SRCDEST) is the builder's; what
	# is in it, earlier builds of the target wrote as the builder.
	if [[ -n ${VAGENT_SRCDEST-} ]]; then
		chown builder:builder -- "$VAGENT_SRCDEST" || exit
	fi
	if [[ $VAGENT_KIND == dir ]]; then
		copy_source || exit
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
	shallow=(--single-branch --depth 1)
	full=(--single-branch)
	[[ -z $VAGENT_BRANCH ]] || shallow+=("--branch=$VAGENT_BRANCH") full+=("--branch=$VAGENT_BRANCH")
	git_clone() {
		if [[ -v VAGENT_URL_USER ]]; then
			# Only this helper (an empty value drops any other): it
			# answers for the URL's host alone.
			GIT_CONFIG_COUNT=2 GIT_CONFIG_KEY_0=credential.helper GIT_CONFIG_VALUE_0= \
				GIT_CONFIG_KEY_1=credential.helper GIT_CONFIG_VALUE_1=$ctl/git-credential \
				run git clone "$@" -- "$VAGENT_URL" repo
		else
			run git clone "$@" -- "$VAGENT_URL" repo
		fi
	}
	# A shallow clone, unless the server speaks git's dumb HTTP protocol,
	# which cannot: then the whole history.
	if ! git_clone "${shallow[@]}" 2>/build/.vagent-clone.err; then
		rc=$?
		cat /build/.vagent-clone.err
		grep -q 'dumb http transport does not support shallow' /build/.vagent-clone.err || { (exit "$rc") || failed clone; }
		printf "vagent: the server speaks git's dumb HTTP protocol, which cannot clone shallow: cloning the whole history\n"
		rm -rf repo
		git_clone "${full[@]}" || failed clone
	else
		cat /build/.vagent-clone.err
	fi
	rm -f /build/.vagent-clone.err
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
		run "${args[@]}" --config - --url "$VAGENT_URL" <<<"user = \"$cred\"" || failed download
		unset cred
	else
		run "${args[@]}" --url "$VAGENT_URL" </dev/null || failed download
	fi
	;;
dir) ;;
*) fail "unknown source kind" ;;
esac
unset VAGENT_URL_USER VAGENT_URL_PASSWORD
# The protocols allowed are the job URL's clone's: makepkg makes the
# working copy of a VCS source from its bare mirror (file://), and what a
# PKGBUILD fetches is its own business, as on a packager's machine.
unset GIT_ALLOW_PROTOCOL

top=$(realpath -e -- repo) || exit
dir=$top
if [[ -n $VAGENT_PATH ]]; then
	dir=$(realpath -e -- "repo/$VAGENT_PATH") || fail_in path "path $(printf '%q' "$VAGENT_PATH") is not in the repository"
	[[ $dir == "$top" || $dir == "$top"/* ]] || fail_in path "path $(printf '%q' "$VAGENT_PATH") leaves the repository"
fi
run cd -- "$dir" || exit
printf '%s\n' "$dir" >/build/.vagent-dir
[[ -f PKGBUILD ]] || fail_in pkgbuild "no PKGBUILD in $(printf '%q' "${dir#/build/}")"

export PKGDEST=/build/out
if [[ -n ${VAGENT_SRCDEST-} ]]; then
	export SRCDEST=$VAGENT_SRCDEST
fi
mkdir -p /build/out || exit
# One makepkg run (sources, dependencies, build() and package() in one)
# when the version is known before makepkg: a PKGBUILD without pkgver(),
# whose .SRCINFO is what sourcing it gives, so the agent decides first.
# makepkg loads itself once less: seconds on a small VM. A pkgver() (a VCS
# PKGBUILD) sets the version from the sources, and an offline build needs
# the sources and dependencies before the agent cuts the network (with
# VAGENT_OFFLINE=1 it cuts it between the passes): those run makepkg
# --nobuild first, and the rest after the decision.
step srcinfo
srcinfo >/build/.SRCINFO || failed srcinfo
passes=1
if [[ -e /build/.vagent-pkgver || ${VAGENT_OFFLINE-} == 1 || ${VAGENT_PASSES-} == 2 ]]; then
	passes=2
	step makepkg --nobuild --syncdeps --needed --noconfirm
	makepkg_run makepkg --nobuild --syncdeps --needed --noconfirm || exit
	step srcinfo
	srcinfo >/build/.SRCINFO || failed srcinfo
fi
if [[ $VAGENT_CHECK == true ]]; then
	# The repositories' versions of the packages, while the network is
	# there (vagent build --check).
	mapfile -t names < <(sed -n 's/^pkgname = //p' /build/.SRCINFO)
	run "$ctl/checkpkg" fetch "${names[@]}"
fi
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
args=(makepkg --syncdeps --needed --noconfirm)
((passes == 1)) || args+=(--noextract)
step "MAKEFLAGS=$MAKEFLAGS" "${args[@]}"
makepkg_run "${args[@]}"
status=$?
if ((status != 0)); then
	if [[ $offline == 1 ]]; then
		printf 'vagent: build() or package() failed without network (build_network.offline_build): downloads are not possible there; list every file the build needs in source=()\n'
	fi
	exit "$status"
fi
if [[ $VAGENT_CHECK == true ]]; then
	run "$ctl/checkpkg" compare /build/out
fi
