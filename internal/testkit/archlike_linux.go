package testkit

import (
	"archive/tar"
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"github.com/sirupsen/logrus"
	"golang.org/x/sys/unix"
)

// buildArchLike builds the image of rcp into the OCI layout dest, unless
// another builder finished it while we waited for the lock.
func buildArchLike(ctx context.Context, o options, rcp recipe, dest string) (retErr error) {
	if os.Geteuid() != 0 {
		return fmt.Errorf("building %s: %w (debootstrap)", dest, ErrNotRoot)
	}
	if _, err := exec.LookPath("debootstrap"); err != nil {
		return fmt.Errorf("building %s: %w: debootstrap", dest, ErrToolMissing)
	}
	if err := os.MkdirAll(o.cacheDir, 0o755); err != nil {
		return err
	}
	unlock, err := lockFile(ctx, dest+".lock")
	if err != nil {
		return err
	}
	defer unlock()
	if _, err := os.Stat(filepath.Join(dest, "index.json")); err == nil {
		return nil // built by someone else meanwhile
	}
	// Leftovers of crashed builds of this recipe: we hold its lock, so
	// nobody is using them.
	prefix := ".tmp-" + filepath.Base(dest) + "-"
	stale, _ := filepath.Glob(filepath.Join(o.cacheDir, prefix+"*"))
	for _, s := range stale {
		o.log.WithField("dir", s).Info("removing a crashed build")
		if err := removeTree(s); err != nil {
			return err
		}
	}
	tmp, err := os.MkdirTemp(o.cacheDir, prefix)
	if err != nil {
		return err
	}
	defer func() {
		if err := removeTree(tmp); err != nil && retErr == nil {
			retErr = err
		}
	}()

	start := time.Now()
	mirror, err := DebianMirror("/", rcp.Release)
	if err != nil {
		return err
	}
	root := filepath.Join(tmp, "rootfs")
	log := o.log.WithField("image", "archlike-"+rcp.key())
	log.WithField("mirror", mirror).Info("debootstrap (takes minutes)")
	args := []string{"--variant=" + rcp.Variant, "--include=" + strings.Join(rcp.Packages, ","), rcp.Release, root, mirror}
	if err := runLogged(ctx, log, filepath.Join(tmp, "debootstrap.log"), "debootstrap", args...); err != nil {
		return err
	}
	// debootstrap unmounts what it mounted; make sure, since the tree is
	// archived and later removed.
	if err := unmountUnder(root); err != nil {
		return err
	}

	if err := removeGlobs(root, rcp.Clean); err != nil {
		return err
	}
	work := filepath.Join(tmp, "blobs")
	if err := os.Mkdir(work, 0o755); err != nil {
		return err
	}
	s0, err := snapshotTree(root)
	if err != nil {
		return err
	}
	log.Info("layer 1: the debootstrap tree (gzip)")
	l1, err := writeLayer(filepath.Join(work, "l1"), types.OCILayer, func(tw *tar.Writer) error {
		return writeTreeLayer(tw, nil, s0, nil)
	})
	if err != nil {
		return fmt.Errorf("layer 1: %w", err)
	}

	log.Info("layer 2: fix-ups (zstd)")
	if err := runChroot(ctx, log, root, filepath.Join(tmp, "fixups.log"), rcp.Fixups); err != nil {
		return fmt.Errorf("layer 2: %w", err)
	}
	if err := unix.Lsetxattr(filepath.Join(root, "etc/makepkg.conf"), ArchLikeXattr, []byte(ArchLikeXattrValue), 0); err != nil {
		return fmt.Errorf("layer 2: setting xattr: %w", err)
	}
	s1, err := snapshotTree(root)
	if err != nil {
		return err
	}
	l2, err := writeLayer(filepath.Join(work, "l2"), types.OCILayerZStd, func(tw *tar.Writer) error {
		return writeTreeLayer(tw, s0, s1, nil)
	})
	if err != nil {
		return fmt.Errorf("layer 2: %w", err)
	}

	log.Info("layer 3: cleanup (uncompressed)")
	opaque, err := cleanupTree(root, rcp)
	if err != nil {
		return fmt.Errorf("layer 3: %w", err)
	}
	s2, err := snapshotTree(root)
	if err != nil {
		return err
	}
	l3, err := writeLayer(filepath.Join(work, "l3"), types.OCIUncompressedLayer, func(tw *tar.Writer) error {
		return writeTreeLayer(tw, s1, s2, opaque)
	})
	if err != nil {
		return fmt.Errorf("layer 3: %w", err)
	}

	img, err := archLikeConfig(rcp, []v1.Layer{l1, l2, l3}, []string{
		"debootstrap --variant=" + rcp.Variant + " --include=" + strings.Join(rcp.Packages, ",") + " " + rcp.Release,
		"vagent testkit archlike/fixups.sh",
		"vagent testkit cleanup: remove " + strings.Join(rcp.Remove, " ") + "; replace " + strings.Join(rcp.Replace, " "),
	})
	if err != nil {
		return err
	}
	lay := filepath.Join(tmp, "layout")
	p, err := layout.Write(lay, empty.Index)
	if err != nil {
		return err
	}
	if err := p.AppendImage(img, layout.WithAnnotations(map[string]string{
		"org.opencontainers.image.ref.name": ArchLikeTag,
	})); err != nil {
		return fmt.Errorf("writing layout: %w", err)
	}
	if err := syncTree(lay); err != nil {
		return err
	}
	if err := os.Rename(lay, dest); err != nil {
		return err
	}
	log.WithFields(logrus.Fields{"dir": dest, "took": time.Since(start).Round(time.Second)}).Info("arch-like image ready")
	return nil
}

// cleanupTree applies the L3 part of the recipe to root and returns the
// replaced directories (opaque in the layer).
func cleanupTree(root string, rcp recipe) (map[string]bool, error) {
	if err := removeGlobs(root, rcp.Remove); err != nil {
		return nil, err
	}
	opaque := map[string]bool{}
	for _, d := range rcp.Replace {
		p := filepath.Join(root, d)
		if err := os.RemoveAll(p); err != nil {
			return nil, err
		}
		if err := os.Mkdir(p, 0o755); err != nil {
			return nil, err
		}
		readme := "Removed from the vagent Arch-like test image to keep it small.\n"
		if err := os.WriteFile(filepath.Join(p, "README"), []byte(readme), 0o644); err != nil {
			return nil, err
		}
		opaque[d] = true
	}
	return opaque, nil
}

// removeGlobs removes what the globs, relative to root, match.
func removeGlobs(root string, globs []string) error {
	for _, g := range globs {
		ms, err := filepath.Glob(filepath.Join(root, g))
		if err != nil {
			return err
		}
		for _, m := range ms {
			if err := os.RemoveAll(m); err != nil {
				return err
			}
		}
	}
	return nil
}

func archLikeConfig(rcp recipe, layers []v1.Layer, createdBy []string) (v1.Image, error) {
	img := mutate.MediaType(empty.Image, types.OCIManifestSchema1)
	img = mutate.ConfigMediaType(img, types.OCIConfigJSON)
	now := time.Now().UTC().Truncate(time.Second)
	for i, l := range layers {
		mt, err := l.MediaType()
		if err != nil {
			return nil, err
		}
		img, err = mutate.Append(img, mutate.Addendum{
			Layer:     l,
			MediaType: mt,
			History:   v1.History{Created: v1.Time{Time: now}, CreatedBy: createdBy[i]},
		})
		if err != nil {
			return nil, err
		}
	}
	cf, err := img.ConfigFile()
	if err != nil {
		return nil, err
	}
	cf = cf.DeepCopy()
	cf.Architecture = runtime.GOARCH // debootstrap installs the host's
	cf.OS = "linux"
	cf.Created = v1.Time{Time: now}
	cf.Config.Env = []string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "LANG=C.UTF-8"}
	cf.Config.Cmd = []string{"/bin/bash"}
	cf.Config.Labels = map[string]string{
		"org.vieter.vagent.testimage":        "archlike",
		"org.vieter.vagent.testimage.recipe": rcp.key(),
	}
	return mutate.ConfigFile(img, cf)
}

// runLogged runs a program, logging its output lines at debug level and
// keeping them in logPath; a failure carries the end of the output.
func runLogged(ctx context.Context, log logrus.FieldLogger, logPath, prog string, args ...string) error {
	return runWith(ctx, log, logPath, nil, prog, args...)
}

// runChroot runs script with /bin/sh as root inside root.
func runChroot(ctx context.Context, log logrus.FieldLogger, root, logPath, script string) error {
	return runWith(ctx, log, logPath, strings.NewReader(script), "chroot", root, "/bin/sh", "-s")
}

func runWith(ctx context.Context, log logrus.FieldLogger, logPath string, stdin io.Reader, prog string, args ...string) error {
	f, err := os.Create(logPath)
	if err != nil {
		return err
	}
	defer f.Close()
	pr, pw := io.Pipe()
	cmd := exec.CommandContext(ctx, prog, args...)
	cmd.Stdin = stdin
	cmd.Stdout, cmd.Stderr = pw, pw
	cmd.Env = []string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "LC_ALL=C", "HOME=/root", "DEBIAN_FRONTEND=noninteractive"}
	cmd.WaitDelay = 10 * time.Second
	done := make(chan struct{})
	go func() {
		defer close(done)
		sc := bufio.NewScanner(pr)
		for sc.Scan() {
			fmt.Fprintln(f, sc.Text())
			log.Debug(sc.Text())
		}
		_, _ = io.Copy(io.Discard, pr)
	}()
	err = cmd.Run()
	pw.Close()
	<-done
	if err != nil {
		return fmt.Errorf("%s: %w: %s", prog, err, tailFile(logPath, 1500))
	}
	return nil
}

func tailFile(p string, n int) string {
	b, _ := os.ReadFile(p)
	s := strings.TrimSpace(string(b))
	if len(s) > n {
		s = "..." + s[len(s)-n:]
	}
	return s
}

// lockFile takes an exclusive flock on path, waiting while ctx allows.
func lockFile(ctx context.Context, path string) (func(), error) {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return nil, err
	}
	for {
		err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB)
		if err == nil {
			return func() { f.Close() }, nil
		}
		if !errors.Is(err, unix.EWOULDBLOCK) {
			f.Close()
			return nil, fmt.Errorf("locking %s: %w", path, err)
		}
		select {
		case <-ctx.Done():
			f.Close()
			return nil, fmt.Errorf("waiting for %s: %w", path, context.Cause(ctx))
		case <-time.After(250 * time.Millisecond):
		}
	}
}

// syncTree makes every file of dir world-readable (tests that do not run
// as root may read a cached image) and flushes it to disk before dir is
// renamed into place, so that a power loss cannot leave a complete-looking
// layout with empty blobs.
func syncTree(dir string) error {
	return filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if !d.IsDir() {
			if err := os.Chmod(p, 0o644); err != nil {
				return err
			}
		}
		f, err := os.Open(p)
		if err != nil {
			return err
		}
		defer f.Close()
		return f.Sync()
	})
}
