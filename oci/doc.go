// Package oci turns image references into root filesystem directories with
// no container daemon: it resolves references, pulls blobs into a
// content-addressed store, and flattens layers into a directory tree that
// the sandbox uses as its (read-only) overlay lower directory.
//
// # References
//
// ParseReference accepts registry references with Docker's defaults
// ("archlinux:base-devel" is docker.io/library/archlinux:base-devel, an
// optional "docker://" prefix), "oci:DIR[:TAG|@DIGEST]" (an OCI image
// layout directory), "oci-archive:FILE[:TAG|@DIGEST]" (a tarball of one,
// read in place: its entries are indexed once and read as sections) and
// "docker-archive:FILE" (`docker save` output, read with go-containerregistry's
// tarball package). Indexes are followed to the manifest of the store's
// platform (default: linux and the agent's architecture).
//
// # Registries
//
// Registry access uses go-containerregistry's remote.Puller, with one
// http.Transport per store. Mirrors (WithMirrors) are tried in order,
// then the origin; blobs are fetched from the endpoint that served the
// manifest and fall back to the others. Insecure hosts (WithInsecure) may
// use plain HTTP and skip certificate checks; every other host is verified
// against the system roots plus WithCABundle. Credentials come from
// WithCredentials first, then a Docker config.json (WithDockerConfig, or
// go-containerregistry's default keychain). Failures wrap ErrUnknownImage,
// ErrUnauthorized or ErrUnreachable (judged by the origin's answer), and
// the message lists what every endpoint said; credentials never appear in
// errors or logs.
//
// # The store
//
// A Store keeps, under its directory, blobs/sha256/<hex> (every byte
// checked against its digest while it is written; a bad blob is never
// renamed into place), refs.json (reference -> manifest digest) and
// rootfs/<hex> (one flattened tree per manifest digest). Every directory of
// the store is 0700: image trees hold setuid-root and file-capability
// binaries, extracted as root, that no other host user may reach (the
// sandbox does not need the path: the agent mounts a tree as root).
// Pulling an image
// whose blobs are present asks the registry for the manifest only; a digest
// reference whose manifest is present does not touch the network; when the
// registry cannot be reached, a reference pulled before is used as it was.
//
// Writers work under tmp/ and hold an flock on each temporary; the kernel
// drops it if the process dies, so NewStore (and Prune) remove exactly the
// temporaries of dead writers. A rootfs is unpacked into tmp/ and renamed
// to rootfs/<hex> when complete: a crash of vagent leaves a stale
// temporary, never a half tree under rootfs/. A power loss is covered
// without flushing on every unpack: beside each tree, rootfs/<hex>.boot
// (written before the rename) holds the kernel's boot id, and a tree from
// an earlier boot is discarded and unpacked again (its blobs are checked
// again while it is). With WithSync(true) the tree is flushed with syncfs
// first and marked "synced", kept across reboots; syncfs flushes the whole
// file system, so it is not the default. Concurrent
// Rootfs calls for one digest unpack once (singleflight in a process; the
// rename decides between processes). A Rootfs holds a shared flock on its
// tree until Release; Remove and Prune skip trees in use. Pulls hold a
// shared lock on gc.lock, Remove and Prune an exclusive one, so a pull's
// blobs are not collected before its reference is recorded.
//
// # Images and layouts for other packages
//
// Store.Image returns a pulled image as a v1.Image over the store's blobs,
// for packages that build on it (builder); Layout (OpenLayout) is an OCI
// image layout written by this package, read by skopeo, umoci and
// go-containerregistry's pkg/v1/layout. Layout writes through
// internal/lockfile's atomic writer rather than pkg/v1/layout's, which
// replaces index.json in place and writes blobs unchecked under their final
// names (see Layout). No other package builds paths under a store or a
// layout.
//
// # Streaming and parallelism
//
// Layers are downloaded at most WithParallelDownloads at a time, in layer order, while
// the unpacker applies them strictly in order as each one arrives: layer
// N+1 downloads while layer N is extracted. Each layer streams from the
// store's file through a sha256 check, a decompressor (klauspost/compress
// gzip or zstd, chosen by magic bytes since media types are often wrong;
// anything else is read as an uncompressed tar) running in its own
// goroutine, and a small ring of 512 KiB chunks into the tar extractor on
// the calling goroutine, so inflating and writing files use two cores.
// Memory does not depend on the layer size (see TestMemoryBounded). Cached
// blobs are checked again while they are unpacked (sha256 with CPU support
// costs little next to inflating; a blob the same pull downloaded was
// checked as it was written and is not hashed twice): a blob corrupted on
// disk fails the unpack with ErrDigestMismatch and is dropped; a cached
// blob of the wrong size (cut short by a power loss) is fetched again.
// Nothing is fsynced per file.
//
// # Flattening
//
// Unpack does not use go-containerregistry's mutate.Extract, which
// mishandles opaque whiteouts and hardlinks. The extractor keeps an
// O_PATH descriptor of the root and resolves every parent directory with
// openat2(RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS | RESOLVE_NO_XDEV): the
// kernel resolves ".." and symlinks, absolute ones included, as if the
// root were "/", so no path can leave it (Linux 5.6 or later). Entries are
// then created relative to the parent's descriptor (openat with
// O_EXCL|O_NOFOLLOW, mkdirat, symlinkat, linkat, mknodat), so a symlink as
// the last component is replaced, never followed; nothing is joined as a
// string. The last parent descriptor is cached (tar streams group a
// directory's entries) and dropped whenever anything is removed.
//
// Symlinks in a parent chain are followed the way the container will see
// them, inside the root: a layer with "evil -> /" then "evil/etc/x" writes
// <root>/etc/x, and a symlink pointing into the host's /etc leads to the
// rootfs's /etc. Absolute names and hardlink targets are read as tar,
// umoci and go-containerregistry read them, as paths in the image's root:
// "/tmp/x" is <root>/tmp/x and "/../x" is <root>/x. Entries that cannot be
// meant for the tree fail the unpack with ErrUnsafeEntry and an error
// naming the layer and the entry: relative names or hardlink targets that
// climb out with "..", a hardlink to the root, whiteouts of "." or "..", a
// non-directory root, and device nodes unless WithDevices(true) (a device
// node in a build root is a way out of the sandbox; builds get /dev from
// the sandbox).
//
// Whiteouts (".wh.NAME") remove NAME from lower layers; the opaque marker
// (".wh..wh..opq") removes the lower layers' contents of its directory.
// Both apply to lower layers only, wherever they appear in the layer's
// stream: the extractor remembers which paths the current layer created
// and spares them (and, for an opaque directory, recurses into the
// directories the layer re-created). Other ".wh..wh." names (aufs
// metadata) are ignored. Hardlinks may point at files of earlier layers;
// one whose target does not exist yet is made at the end of its layer
// (tar streams may list a link before its target), and fails the unpack
// only if the target never appears. Regular files are written with one
// 1 MiB buffer, checking the context before each; aligned 4 KiB blocks of
// zeros are skipped and the file extended to its size, so holes stay holes
// (archive/tar reads a sparse entry's holes back as zeros). Then owner
// (as root), mode (after chown, which clears setuid/setgid and
// capabilities), extended attributes and times are set through the open
// descriptor. A file is created with its permission bits, so the fchown
// and fchmod that would change nothing are skipped (a root-owned file
// whose parent is not setgid, a mode the umask left whole): most files
// cost openat, pwrite, utimensat and close.
// Extended attributes come from PAX SCHILY.xattr records, security.capability
// included; trusted.overlay.* and user.overlay.* are dropped (they would
// steer the sandbox's overlayfs), and attributes the file system refuses
// are skipped. Directory metadata (owner, mode, xattrs, mtime) is applied
// at the end of the layer that lists the directory, after its contents.
// Without root, ownership is not changed.
//
// # Budget
//
// One unpack may not go over its Budget (WithBudget, WithUnpackBudget):
// decompressed bytes, declared file sizes (a sparse file's logical size,
// checked at its header before anything is written), entries and path
// depth, summed over the image's layers. Going over fails with
// ErrBudgetExceeded; a Store removes the partial tree as after any failed
// unpack. The defaults (DefaultBudget) fit real images with a wide margin.
//
// # Id shift
//
// WithIDShift(uidOffset, gidOffset) adds offsets to every owner (container
// id + offset), for a sandbox that runs a user namespace over a plain copy.
// The sandbox on this project's hosts instead mounts an idmapped view of
// the unshifted tree (one copy per image, shared by every mapping), so the
// store unpacks unshifted by default; the option stays for kernels or file
// systems without idmapped mounts (pass it with WithUnpackOptions).
package oci
