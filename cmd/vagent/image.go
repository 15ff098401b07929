package main

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"text/tabwriter"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/vieter-v/vagent/oci"
)

func newImageCmd(env *cliEnv) *cobra.Command {
	return newGroup("image", "pull, load, push, list and remove base images (pull, load, push, ls, rm, prune)",
		"Pull, load, push, list and remove the base images of builds, kept in DATA_DIR/images.\n\n"+
			"REF is a registry reference with Docker's defaults (archlinux:base-devel is\n"+
			"docker.io/library/archlinux:base-devel), oci:DIR[:TAG|@DIGEST],\n"+
			"oci-archive:FILE[:TAG] or docker-archive:FILE.",
		newImagePullCmd(env), newImageLoadCmd(env), newImagePushCmd(env), newImageListCmd(env), newImageRemoveCmd(env), newImagePruneCmd(env))
}

// storeFlags are the flags every image command takes.
type storeFlags struct {
	dataDir string
}

func (f *storeFlags) register(fs *pflag.FlagSet) {
	dataDirVar(fs, &f.dataDir, defaultDataDir, "vagent's data `DIR` (images are in DIR/images)")
}

// open opens (creating it if needed) the image store of the data dir.
func (f *storeFlags) open(env *cliEnv, opts ...oci.Option) (*oci.Store, error) {
	opts = append(append([]oci.Option{oci.WithLogger(env.log)}, storeOptions()...), opts...)
	s, err := oci.NewStore(filepath.Join(f.dataDir, "images"), opts...)
	if err != nil {
		return nil, explain(err, f.dataDir)
	}
	return s, nil
}

// openExisting opens the image store of an existing data dir, nil when
// the data dir has none yet: commands that read or remove never create a
// data dir (a typo must not leave a tree behind).
func (f *storeFlags) openExisting(env *cliEnv) (*oci.Store, error) {
	if err := requireDataDir(f.dataDir); err != nil {
		return nil, err
	}
	if _, err := os.Stat(filepath.Join(f.dataDir, "images", "blobs")); errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	return f.open(env)
}

// dataDirVar defines --data-dir: a relative DIR is taken from the current
// directory, as a shell user expects, and held as an absolute path (the
// data dir's trees are mounted and compared by path: data_dir in a
// configuration must be absolute).
func dataDirVar(fs *pflag.FlagSet, p *string, def, usage string) {
	*p = def
	fs.Var(absPathValue{p}, "data-dir", usage)
}

// absPathValue is a flag holding an absolute path.
type absPathValue struct{ p *string }

func (v absPathValue) String() string {
	if v.p == nil {
		return ""
	}
	return *v.p
}

func (v absPathValue) Set(s string) error {
	if s == "" {
		return errors.New("empty path")
	}
	abs, err := filepath.Abs(s)
	if err != nil {
		return err
	}
	*v.p = abs
	return nil
}

func (absPathValue) Type() string { return "string" }

// errNoDataDir: the data dir of a command that does not create one does
// not exist.
var errNoDataDir = errors.New("no such data dir")

// requireDataDir fails with errNoDataDir unless dir is a directory.
func requireDataDir(dir string) error {
	fi, err := os.Stat(dir)
	switch {
	case errors.Is(err, os.ErrNotExist):
		return fmt.Errorf("%w: %s (pass --data-dir, or --config with the agent's data_dir)", errNoDataDir, dir)
	case err != nil:
		return err
	case !fi.IsDir():
		return fmt.Errorf("%w: %s is not a directory", errNoDataDir, dir)
	}
	return nil
}

// registryFlags configure registry access (pull only).
type registryFlags struct {
	insecure     []string
	mirrors      []string
	mirrorsOld   []string // --mirror, the deprecated name of --registry-mirror
	cas          []string
	dockerConfig string
	platform     string
	downloads    int
}

func (f *registryFlags) register(fs *pflag.FlagSet) {
	fs.StringArrayVar(&f.insecure, "insecure", nil, "allow plain HTTP and unverified TLS for registry `HOST` (repeatable)")
	fs.StringArrayVar(&f.mirrors, "registry-mirror", nil, "try the registry mirror(s) `HOST=URL[,URL]` before registry HOST (repeatable, tried in order)")
	fs.StringArrayVar(&f.mirrorsOld, "mirror", nil, "deprecated name of --registry-mirror")
	_ = fs.MarkHidden("mirror")
	fs.StringArrayVar(&f.cas, "ca", nil, "trust the PEM certificates in `FILE` for registries (repeatable)")
	fs.StringVar(&f.dockerConfig, "docker-config", "", "read registry credentials from this Docker config.json `FILE` (default: the Docker/podman defaults)")
	fs.StringVar(&f.platform, "platform", "", "pick this `OS/ARCH[/VARIANT]` from multi-platform images (default: the agent's)")
	fs.IntVar(&f.downloads, "jobs", 3, "download at most `N` blobs at once")
}

func (f *registryFlags) options(env *cliEnv) ([]oci.Option, error) {
	var opts []oci.Option
	if len(f.insecure) > 0 {
		opts = append(opts, oci.WithInsecure(f.insecure...))
	}
	if len(f.mirrorsOld) > 0 {
		env.log.Warn("--mirror is deprecated: use --registry-mirror (pacman mirrors are --pacman-mirror)")
	}
	for _, m := range append(f.mirrors, f.mirrorsOld...) {
		host, url, ok := strings.Cut(m, "=")
		if !ok || host == "" || url == "" {
			return nil, usageError("--registry-mirror %q: want HOST=URL", m)
		}
		opts = append(opts, oci.WithMirrors(host, strings.Split(url, ",")...))
	}
	for _, c := range f.cas {
		opts = append(opts, oci.WithCABundle(c))
	}
	if f.dockerConfig != "" {
		opts = append(opts, oci.WithDockerConfig(f.dockerConfig))
	}
	if f.platform != "" {
		p, err := v1.ParsePlatform(f.platform)
		if err != nil || p.OS == "" || p.Architecture == "" {
			return nil, usageError("--platform %q: want OS/ARCH[/VARIANT]", f.platform)
		}
		opts = append(opts, oci.WithPlatform(*p))
	}
	opts = append(opts, oci.WithParallelDownloads(f.downloads))
	return opts, nil
}

// errNotChecked: a pull could not ask the registry and only found the
// copy in the store.
var errNotChecked = errors.New("could not check the registry for a newer image")

func newImagePullCmd(env *cliEnv) *cobra.Command {
	var af agentFlags
	var rf registryFlags
	var unpack, preferCache bool
	c := &cobra.Command{
		Use:   "pull [flags] REF",
		Short: "fetch an image into the store and unpack its rootfs",
		Long: "Fetch an image into the store and unpack its rootfs. When the registry cannot be reached\n" +
			"and the store holds a copy of REF, the pull fails (exit status 1) unless --prefer-cache\n" +
			"says that copy will do.",
		Args: exactArgs(1, "one image reference"),
		RunE: func(c *cobra.Command, args []string) error {
			if err := af.load(env, c); err != nil {
				return err
			}
			sf := &af.storeFlags
			opts, err := af.ociOptions(env, &rf)
			if err != nil {
				return err
			}
			ref := args[0]
			prog := newPullProgress(env)
			defer prog.finish()
			opts = append(opts, oci.WithProgress(prog.update))
			s, err := sf.open(env, opts...)
			if err != nil {
				return err
			}
			start := time.Now()
			var digest v1.Hash
			if unpack {
				rfs, err := s.Rootfs(c.Context(), ref)
				prog.finish()
				if err != nil {
					return explain(err, sf.dataDir)
				}
				defer rfs.Release()
				digest = rfs.Digest
				fmt.Fprintf(env.stdout, "%s\ndigest: %s\nrootfs: %s\n", rfs.Ref, rfs.Digest, rfs.Dir)
			} else {
				img, err := s.Pull(c.Context(), ref)
				prog.finish()
				if err != nil {
					return explain(err, sf.dataDir)
				}
				digest = img.Digest
				fmt.Fprintf(env.stdout, "%s\ndigest: %s\n", img.Ref, img.Digest)
			}
			if !prog.checked(ref) && !preferCache {
				return fmt.Errorf("%s: %w (the registry is unreachable); the store's copy %s is shown above\n"+
					"  hint: pass --prefer-cache to accept a cached copy, or check the network and --registry-mirror", ref, errNotChecked, shortHash(digest))
			}
			env.log.WithFields(map[string]any{"image": ref, "digest": digest.String(), "elapsed": time.Since(start).Round(time.Millisecond).String()}).Debug("pulled")
			return nil
		},
	}
	fs := c.Flags()
	af.register(c, "its data_dir and registries")
	rf.register(fs)
	fs.BoolVar(&unpack, "unpack", true, "also unpack the image's rootfs (false: fetch blobs only)")
	fs.BoolVar(&preferCache, "prefer-cache", false, "succeed with the copy in the store when the registry cannot be reached")
	return c
}

func newImageListCmd(env *cliEnv) *cobra.Command {
	var sf storeFlags
	var quiet bool
	c := &cobra.Command{
		Use:     "ls [flags]",
		Aliases: []string{"list"},
		Short:   "list the images in the store, then the builder images made from them",
		Args:    noArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			s, err := sf.openExisting(env)
			if err != nil {
				return err
			}
			var list []oci.ImageInfo
			if s != nil {
				if list, err = s.List(); err != nil {
					return explain(err, sf.dataDir)
				}
			}
			if quiet {
				for _, i := range list {
					fmt.Fprintln(env.stdout, i.Ref)
				}
				return nil
			}
			fmt.Fprintln(env.stdout, "Base images:")
			tw := tabwriter.NewWriter(env.stdout, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "REFERENCE\tDIGEST\tSIZE\tPULLED\tROOTFS")
			for _, i := range list {
				unpacked := "-"
				if i.Unpacked {
					unpacked = "yes"
				}
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", i.Ref, shortHash(i.Digest), humanBytes(i.Size), i.Pulled.Local().Format("2006-01-02 15:04"), unpacked)
			}
			if err := tw.Flush(); err != nil {
				return err
			}
			// The builder images made from those bases.
			fmt.Fprintln(env.stdout, "\nBuilder images (vagent builder ls):")
			return listBuilders(env, sf.dataDir, nil)
		},
	}
	sf.register(c.Flags())
	c.Flags().BoolVarP(&quiet, "quiet", "q", false, "print the base images' references only")
	return c
}

func newImageRemoveCmd(env *cliEnv) *cobra.Command {
	var sf storeFlags
	c := &cobra.Command{
		Use:     "rm [flags] REF...",
		Aliases: []string{"remove"},
		Short:   "remove images (and their rootfs, unless in use)",
		Args: func(c *cobra.Command, args []string) error {
			if len(args) == 0 {
				return usageError("image rm takes at least one image reference")
			}
			return nil
		},
		RunE: func(c *cobra.Command, args []string) error {
			s, err := sf.openExisting(env)
			if err != nil {
				return err
			}
			var errs []error
			for _, ref := range args {
				if s == nil {
					r, err := oci.ParseReference(ref)
					if err == nil {
						err = fmt.Errorf("image not in store: %s", r)
					}
					errs = append(errs, err)
					continue
				}
				if err := s.Remove(ref); err != nil {
					errs = append(errs, explain(err, sf.dataDir))
					continue
				}
				fmt.Fprintf(env.stdout, "removed %s\n", ref)
			}
			return errors.Join(errs...)
		},
	}
	sf.register(c.Flags())
	return c
}

func newImagePruneCmd(env *cliEnv) *cobra.Command {
	var sf storeFlags
	c := &cobra.Command{
		Use:   "prune [flags]",
		Short: "remove the blobs and rootfs no image uses, and leftovers of crashes",
		Long: "Remove the blobs and rootfs no image uses, and leftovers of crashes. Builder images\n" +
			"are kept apart: `vagent builder prune` removes those.",
		Args: noArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			s, err := sf.openExisting(env)
			if err != nil {
				return err
			}
			var rep oci.PruneReport
			if s != nil {
				if rep, err = s.Prune(c.Context()); err != nil {
					return explain(err, sf.dataDir)
				}
			}
			fmt.Fprintf(env.stdout, "removed %d blobs (%s), %d rootfs, %d stale temporaries", rep.Blobs, humanBytes(rep.Bytes), rep.Rootfs, rep.Temps)
			if rep.InUse > 0 {
				fmt.Fprintf(env.stdout, "; kept %d rootfs in use", rep.InUse)
			}
			fmt.Fprintln(env.stdout)
			return nil
		},
	}
	sf.register(c.Flags())
	return c
}

// explain adds what a user can do about an error.
func explain(err error, dataDir string) error {
	var hint string
	switch {
	case errors.Is(err, oci.ErrUnauthorized):
		hint = "check the credentials (docker login, or --docker-config FILE)"
	case errors.Is(err, oci.ErrUnreachable):
		hint = "check the network, or configure --registry-mirror HOST=URL, --insecure HOST or --ca FILE"
	case errors.Is(err, oci.ErrUnknownImage):
		hint = "check the name, tag and platform"
	case errors.Is(err, oci.ErrDigestMismatch):
		hint = "the registry, a mirror or the disk gave corrupt data; nothing corrupt was kept, try again"
	case errors.Is(err, oci.ErrDiskFull):
		hint = fmt.Sprintf("free space under %s (vagent image prune may help)", dataDir)
	case errors.Is(err, oci.ErrUnsafeEntry):
		hint = "the image has a layer that tries to write outside its root; it was not unpacked"
	case errors.Is(err, os.ErrPermission):
		hint = fmt.Sprintf("run as a user that may write %s, or pass --data-dir", dataDir)
	default:
		return err
	}
	return fmt.Errorf("%w\n  hint: %s", err, hint)
}

func shortHash(h v1.Hash) string {
	if len(h.Hex) < 12 {
		return h.String()
	}
	return h.Hex[:12]
}

func humanBytes(n int64) string {
	switch {
	case n >= 1<<30:
		return fmt.Sprintf("%.1f GiB", float64(n)/(1<<30))
	case n >= 1<<20:
		return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20))
	case n >= 1<<10:
		return fmt.Sprintf("%.1f KiB", float64(n)/(1<<10))
	}
	return fmt.Sprintf("%d B", n)
}
