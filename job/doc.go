// Package job turns one Vieter job into a sandboxed build on its builder
// image and implements poll.Executor: a Runner runs jobs. (Builder images
// themselves are package builder's; the names say which is which: this
// package runs a job, builder prepares the image it runs on.)
//
// It has a folder of its own because it is the glue between three packages
// that must not know each other: poll runs the agent loop without root and
// without images (it only needs an Executor), builder prepares builder
// images, and sandbox runs a process tree on a root filesystem. A build needs
// all three plus the Vieter repository protocol (the skip check and
// publishing, through package vieter), which belongs to none of them.
//
// # Steps
//
// Runner.Run follows the reference agent, in four phases (check, prepare,
// sandbox, collect: see run_linux.go), each of which ends the build in one
// way and releases what the earlier ones acquired:
//
//  1. lease the builder image of the job's base_image;
//  2. in one sandbox run of a fixed script embedded in the binary
//     (build.sh): append the job's repository to /etc/pacman.conf
//     ("[repo]", "Server = <address>/$repo/$arch", "SigLevel = Optional")
//     and run pacman -Syu; then, as the builder user, fetch the sources (a
//     shallow git clone of url, branch and path; or the PKGBUILD downloaded
//     from url) and print the fields of a .SRCINFO the agent needs (the
//     PKGBUILD sourced as makepkg sources it: makepkg --printsrcinfo takes
//     seconds to load libmakepkg). A PKGBUILD with pkgver() (its version
//     comes from its sources: VCS) and every offline build run makepkg
//     --nobuild --syncdeps first; any other is sourced as it is, so that
//     makepkg runs once in all;
//  3. the agent reads that .SRCINFO, parses it (ParseSrcInfo) and, unless
//     the job is forced, asks the server whether every package name at
//     [epoch:]pkgver-pkgrel is already there (HEAD
//     <address>/<repo>/<arch>/<pkgname>-<version>); it tells the script to
//     build or to stop;
//  4. MAKEFLAGS=-j<cpus> makepkg --syncdeps (--noextract after a --nobuild
//     pass); with WithOfflineBuild the agent cuts the build's network
//     before it says "build" (sandbox.NetworkControl), so build() and
//     package() run without it;
//  5. the agent takes the packages from the run's overlay upper directory
//     and publishes each to <address>/<repo>/publish.
//
// A repository that has no package yet has no database and a Vieter server
// answers 404 for it, which would make pacman -Sy fail: the agent checks
// <repo>.db first and leaves such a repository out of pacman.conf.
//
// # Network
//
// A build runs on the isolated network by default (WithNetwork,
// sandbox.NetworkIsolated): it reaches the server and the servers of the
// repositories in its pacman.conf through the sandbox's forwards when they
// are the host's, and WithNetwork's further endpoints; a job's own URLs
// (its git or PKGBUILD URL) are never forwarded: they come from the server.
//
// # Untrusted input
//
// Every string of a job is data. Values are validated (ValidateJob: repo
// names, relative paths without "..", branch names git accepts, URLs that
// do not start with "-" and use no "transport::" helper such as ext::,
// registry references only for base_image) and then reach the script only
// as environment variables, which it passes as single arguments after "--";
// the script itself is a constant. The repository lines for pacman.conf are
// written by the agent from validated values into a read-only control
// directory (/run/vagent in the container). git gets GIT_ALLOW_PROTOCOL
// (http, https, git, ssh); the path is resolved inside the container and
// must stay inside the clone, symlinks included.
//
// Credentials in a job's URL (https://user:password@host/…) never reach a
// command line, which every host user can read: the agent takes them out
// of the URL the script gets and writes them into the control directory,
// readable by the container's root only; the script hands them to the
// builder user's environment for git (a credential helper that answers for
// the URL's host only) and curl (a configuration on its standard input),
// and unsets them before makepkg (credentials.go).
//
// The API key never enters the sandbox: the agent publishes the packages
// itself, with their Content-Length, retrying transient failures (network
// errors, 408, 429, 5xx) with jittered exponential backoff.
//
// What the build can reach is read with bounds and without following
// links: PKGDEST is opened below a descriptor of the upper directory
// (RESOLVE_BENEATH, no symbolic links, no mount crossing: the upper's own
// path may cross both, e.g. a data directory on a filesystem of its own);
// at most 4096 entries are read there and at most 64 packages of at most
// MaxPackageSize each taken. Before any is published or copied, every
// package file name must be valid (pacman.ValidatePackageFile: Arch's
// characters, at most 200 bytes) and every package opened
// O_NOFOLLOW|O_NONBLOCK must be a regular file without holes (SEEK_HOLE: a
// sparse file would be written out whole); a copy takes exactly the bytes
// the build wrote (lockfile.Write). What a build leaves in its package
// cache is removed without being followed (see below).
//
// The script and the agent talk through two FIFOs in the control directory:
// the script writes the .SRCINFO (length-prefixed) to one and reads the
// decision ("build" or "skip") from the other. A build that forges either
// only decides about itself. The srcinfo FIFO is writable by the PKGBUILD
// at any time: its length line is read within 64 bytes and the .SRCINFO
// within MaxSrcInfo, both within SrcInfoWithin of the first byte; anything
// else fails the build, and what follows is drained through a fixed
// buffer.
//
// # Log
//
// Everything goes to the io.Writer the caller passes (poll spools it to a
// file): the builder setup output, each step announced as "+ command args"
// (arguments quoted as a shell would read them, so a value with a newline
// cannot forge a line), the merged stdout and stderr of the build, and,
// for each package published, the line that says how the server confirmed
// it. The build applies no deadline and writes no summary: poll.RunJob owns
// the job's deadline, classifies the outcome and writes the one footer,
// "vagent: <why it stopped>; exit code N; took D" where why is success,
// failure, skipped, timeout after N s or cancelled. Callers enter from
// above: the agent's slots run Execute (poll.Executor) through RunJob, and
// `vagent build` runs Run through RunJob too, with the same footer.
//
// # The server
//
// Every request to the server goes through the agent's one vieter.Client
// (WithServer): the database check and the skip check (HasVersion, which
// requires the package's desc, not just a 200) without the key, publishing
// with it. A package counts as published only once the server confirmed it
// (vieter.Client.PublishConfirmed): by a publish answer naming its name and
// version, or by the repository after an answer that proved nothing; it is
// published again while it is absent. A package that could not be
// confirmed fails the build ("NOT confirmed" in the log).
//
// # Package cache
//
// A host directory (<data dir>/pacman-cache by default) holds one cache per
// target (targets/<key>/pkg; the key is the target id, or for a local
// build a hash of its source), mounted on /var/cache/pacman/pkg for one
// build of the target at a time: the agent holds an exclusive flock on
// targets/<key>/lock, beside the tree and in no mount, while the build
// runs, and a second build of the target at the same time gets a private
// cache, removed with it. So no build ever writes a file another build is
// reading or will read at the same time, and only builds of the same
// target, one after another, share a cache (docs/security.md, "Package
// caches"). The directories are 0700 and host root's; pkg/ is owned by the
// mapped root (sandbox Manager.IDRange) and bind-mounted without id
// mapping. So container root writes there as the unprivileged mapped root,
// never as host root, and nothing a build leaves there (setuid or setgid
// files, file capabilities) can be reached by a host user: the root-only
// parents stop them. After each build the agent removes from pkg/ what is
// not a regular file (links, FIFOs, directories: removed, never followed
// or opened) and prunes all caches to WithCacheMaxSize: the least recently
// used targets (by the lock's mtime, which only the agent sets) go whole,
// then the oldest files of the target just built. What the cache holds
// counts toward the build's disk limit as it grows. With WithSourceCache a
// target's cache also has src/, makepkg's SRCDEST (mounted on
// /var/cache/vagent/sources, given to the builder user by the script),
// under the same lease, cleaning (links, FIFOs removed at any depth) and
// bound; never one shared across targets.
//
// The Runner's own directory (run control directories, private caches) is
// 0700 and root's: when the container's init (the mapped root) cannot
// reach the source of a bind mount, libcontainer opens it on the host side,
// as root, and hands the container the descriptor.
//
// # Local builds
//
// Without WithServer there is no skip check and nothing is published: with
// WithOutDir the packages are copied to a directory instead. Run with a
// source directory builds a local directory holding a PKGBUILD, mounted
// read-only into the container and copied there without the outputs of
// earlier builds (packages and build logs next to the PKGBUILD, the output
// directory: source.go). This is `vagent build`, which adds what devtools
// users expect: WithInstall (local packages installed with pacman -U
// before the dependencies, makechrootpkg -I), WithCheck (checkpkg: each
// package against the repositories' version, script/checkpkg),
// WithInspect (the build's tree kept for Built.Inspect, an interactive
// shell as the builder in a second sandbox run on the kept upper, until
// Built.Release) and WithSourceCache (makepkg's SRCDEST in the target's
// cache, cache_linux.go).
//
// # Failures
//
// A failed build names the step that failed: the script writes it to
// /build/.vagent-failed (the clone, the download, the path, a source
// without PKGBUILD, the upgrade, the packages of -I, and for makepkg the
// sources, the dependencies or the function, from makepkg's own message),
// the agent reads it beneath the upper (bounded, no link followed) and the
// footer says it with what makepkg's exit status means (failure.go).
package job
