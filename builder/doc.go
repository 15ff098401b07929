// Package builder prepares, caches, refreshes and collects builder images:
// the image a job's base image becomes before builds run on it (the base
// plus `pacman -Syu --needed --noconfirm base-devel git`, a `builder` user
// and group 1000:1000 with password-less sudo, and /build owned by them),
// the way Vieter's reference agent does with `docker commit`, but without a
// daemon.
//
// It has a package of its own because it composes the two layers below
// it: oci turns references into flattened trees but runs no process, and
// sandbox runs processes on a tree but knows nothing of images. Preparing a
// builder needs both (pull and flatten the base, run the setup in a
// sandbox, turn what the setup changed back into an image layer), and
// neither is its home.
//
// # Preparation
//
// Manager.Acquire returns a Lease on a ready, fresh builder for a base
// image, preparing one first when there is none:
//
//  1. the base is pulled and flattened by the oci.Store (no blob is
//     downloaded again when its digest did not change);
//  2. the setup script runs as root in a sandbox on an overlay of the base
//     rootfs, on the isolated network (WithNetwork; it reaches the
//     configured mirrors and repositories also on the host's loopback), and its output streams to the caller's
//     log; it makes the base fit for pacman (/etc/mtab, pacman's
//     directories, /tmp modes, root's entries, a keyring when none is
//     initialised: docs/build.md lists them), writes the configured mirror
//     list and Pacman repositories,
//     turns on DisableSandbox when the image's pacman knows it (pacman 7
//     sandboxes its downloads in a way that fails in containers; the script
//     asks pacman-conf rather than guessing by distribution), runs pacman
//     -Syu with the setup packages, and creates the builder user, its
//     sudoers entry and /build;
//  3. the overlay upper directory the setup left is written as a new layer:
//     overlay whiteouts (0/0 character devices) become ".wh.NAME" entries,
//     opaque directories (trusted.overlay.opaque=y) get ".wh..wh..opq",
//     owners are shifted back from the sandbox's host ids to container ids,
//     hardlinks are kept, sockets and the sandbox's own mount points are
//     left out;
//  4. the builder is recorded as an OCI image (the base's layers plus the
//     new one, a config with history) in the OCI image layout DIR/oci, tagged
//     LayoutTag(base) (the base reference with ':' and '@' replaced by '-'),
//     so that `skopeo copy oci:DIR/oci:TAG ...`, `umoci unpack --image
//     DIR/oci:TAG` or crane can read it;
//  5. its flattened rootfs (the base's tree, hardlinked when on the same file
//     system, with the new layer applied by oci's extractor) is what builds
//     use as their read-only lower.
//
// A failed setup is a *SetupError (errors.Is ErrSetup) that carries the tail
// of the setup output, so the job that needed the builder can report it.
//
// # Concurrency, freshness and collection
//
// A builder is made with a recipe: the setup script, the packages, the
// Pacman repositories and the mirror list of the Manager's options. Each
// recipe has its own current builder of a base (an agent and a `vagent
// build` with other settings on one data directory keep theirs), and a
// build only ever runs on a builder of its recipe made from the base
// digest the image store records for the base: when there is none (the
// settings changed, or the base was pulled anew), Acquire prepares one and
// waits, saying why in the build's log.
//
// One preparation per base image runs at a time: concurrent Acquires for
// the same base wait for it (in this process, and across processes through
// a lock file), other bases are not blocked. A builder older than the
// maximum age (WithMaxAge) is stale: Acquire then still leases the stale
// builder of its recipe at once and prepares its replacement in the
// background, so the build slots do not stall; this is the only case in
// which a build does not get the builder that would be prepared now. A
// builder that is no longer current is removed when its last lease is
// released (leases are counted, and each holds a shared file lock on the
// builder's directory that Prune respects); a stale builder of another
// recipe is collected by the next agent's start and by Prune.
//
// # On disk
//
//	DIR/oci/                 OCI image layout of every builder (index.json, blobs)
//	DIR/b/<id>/meta.json     base reference and digest, builder digest, creation time
//	DIR/b/<id>/rootfs/       flattened tree, the lower of builds
//	DIR/current/<key>        symlink to the current builder of a base and recipe
//	DIR/locks/<key>.lock     held while a builder for the base is prepared (any recipe)
//	DIR/tmp/                 work in progress, each entry locked by its writer
//
// Builders survive a restart: a fresh one is reused without network access.
// New removes the half-prepared builders a crash left in DIR/tmp, and
// names the current builders of an older vagent (one link per base) by
// their recipe.
package builder
