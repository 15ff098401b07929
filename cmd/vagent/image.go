package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"text/tabwriter"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/vieter-v/vagent/oci"
)

func init() {
	register(&command{name: "image", summary: "pull, list and remove base images (pull, ls, rm, prune)", run: runImage})
}

const defaultDataDir = "/var/lib/vagent"

const imageUsage = `usage: vagent image <command> [flags] [arguments]

commands:
  pull REF     fetch an image into the store and unpack its rootfs
  ls           list the images in the store
  rm REF...    remove images (and their rootfs, unless in use)
  prune        remove what no image uses, and leftovers of crashes

REF is a registry reference with Docker's defaults (archlinux:base-devel is
docker.io/library/archlinux:base-devel), oci:DIR[:TAG|@DIGEST],
oci-archive:FILE[:TAG] or docker-archive:FILE.
Run 'vagent image <command> -h' for its flags.
`

func runImage(ctx context.Context, env *cliEnv, args []string) error {
	if len(args) == 0 {
		fmt.Fprint(env.stderr, imageUsage)
		return &exitError{code: 2}
	}
	switch args[0] {
	case "pull":
		return runImagePull(ctx, env, args[1:])
	case "ls", "list":
		return runImageList(ctx, env, args[1:])
	case "rm", "remove":
		return runImageRemove(ctx, env, args[1:])
	case "prune":
		return runImagePrune(ctx, env, args[1:])
	case "help", "-h", "--help":
		fmt.Fprint(env.stdout, imageUsage)
		return nil
	}
	fmt.Fprint(env.stderr, imageUsage)
	return usageError("unknown image command %q", args[0])
}

// listFlag collects a repeatable flag.
type listFlag []string

func (l *listFlag) String() string     { return strings.Join(*l, ",") }
func (l *listFlag) Set(v string) error { *l = append(*l, v); return nil }

// storeFlags are the flags every image command takes.
type storeFlags struct {
	dataDir string
}

func (f *storeFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&f.dataDir, "data-dir", defaultDataDir, "vagent's data directory (images are in DIR/images)")
}

func (f *storeFlags) open(env *cliEnv, opts ...oci.Option) (*oci.Store, error) {
	opts = append([]oci.Option{oci.WithLogger(env.log)}, opts...)
	s, err := oci.NewStore(filepath.Join(f.dataDir, "images"), opts...)
	if err != nil {
		return nil, explain(err, f.dataDir)
	}
	return s, nil
}

// registryFlags configure registry access (pull only).
type registryFlags struct {
	insecure     listFlag
	mirrors      listFlag
	cas          listFlag
	dockerConfig string
	platform     string
	jobs         int
}

func (f *registryFlags) register(fs *flag.FlagSet) {
	fs.Var(&f.insecure, "insecure", "allow plain HTTP and unverified TLS for registry `HOST` (repeatable)")
	fs.Var(&f.mirrors, "mirror", "try mirror `HOST=URL` before registry HOST (repeatable, tried in order)")
	fs.Var(&f.cas, "ca", "trust the PEM certificates in `FILE` for registries (repeatable)")
	fs.StringVar(&f.dockerConfig, "docker-config", "", "read registry credentials from this Docker config.json `FILE` (default: the Docker/podman defaults)")
	fs.StringVar(&f.platform, "platform", "", "pick this `OS/ARCH[/VARIANT]` from multi-platform images (default: the agent's)")
	fs.IntVar(&f.jobs, "jobs", 3, "download at most `N` blobs at once")
}

func (f *registryFlags) options() ([]oci.Option, error) {
	var opts []oci.Option
	if len(f.insecure) > 0 {
		opts = append(opts, oci.WithInsecure(f.insecure...))
	}
	for _, m := range f.mirrors {
		host, url, ok := strings.Cut(m, "=")
		if !ok || host == "" || url == "" {
			return nil, usageError("--mirror %q: want HOST=URL", m)
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
	opts = append(opts, oci.WithJobs(f.jobs))
	return opts, nil
}

func runImagePull(ctx context.Context, env *cliEnv, args []string) error {
	fs := newFlagSet(env, "image pull", "image pull [flags] REF")
	var sf storeFlags
	var rf registryFlags
	sf.register(fs)
	rf.register(fs)
	unpack := fs.Bool("unpack", true, "also unpack the image's rootfs (false: fetch blobs only)")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if fs.NArg() != 1 {
		fs.Usage()
		return usageError("image pull takes one image reference")
	}
	opts, err := rf.options()
	if err != nil {
		return err
	}
	ref := fs.Arg(0)
	prog := newPullProgress(env)
	opts = append(opts, oci.WithProgress(prog.update))
	s, err := sf.open(env, opts...)
	if err != nil {
		return err
	}
	start := time.Now()
	var digest v1.Hash
	if *unpack {
		rfs, err := s.Rootfs(ctx, ref)
		prog.finish()
		if err != nil {
			return explain(err, sf.dataDir)
		}
		defer rfs.Release()
		digest = rfs.Digest
		fmt.Fprintf(env.stdout, "%s\ndigest: %s\nrootfs: %s\n", rfs.Ref, rfs.Digest, rfs.Dir)
	} else {
		img, err := s.Pull(ctx, ref)
		prog.finish()
		if err != nil {
			return explain(err, sf.dataDir)
		}
		digest = img.Digest
		fmt.Fprintf(env.stdout, "%s\ndigest: %s\n", img.Ref, img.Digest)
	}
	env.log.WithFields(map[string]any{"image": ref, "digest": digest.String(), "elapsed": time.Since(start).Round(time.Millisecond).String()}).Debug("pulled")
	return nil
}

func runImageList(ctx context.Context, env *cliEnv, args []string) error {
	fs := newFlagSet(env, "image ls", "image ls [flags]")
	var sf storeFlags
	sf.register(fs)
	quiet := fs.Bool("q", false, "print references only")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if fs.NArg() != 0 {
		return usageError("image ls takes no arguments")
	}
	s, err := sf.open(env)
	if err != nil {
		return err
	}
	list, err := s.List()
	if err != nil {
		return explain(err, sf.dataDir)
	}
	if *quiet {
		for _, i := range list {
			fmt.Fprintln(env.stdout, i.Ref)
		}
		return nil
	}
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
	fmt.Fprintln(env.stdout)
	return runBuilderList(ctx, env, []string{"--data-dir", sf.dataDir})
}

func runImageRemove(_ context.Context, env *cliEnv, args []string) error {
	fs := newFlagSet(env, "image rm", "image rm [flags] REF...")
	var sf storeFlags
	sf.register(fs)
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if fs.NArg() == 0 {
		fs.Usage()
		return usageError("image rm takes at least one image reference")
	}
	s, err := sf.open(env)
	if err != nil {
		return err
	}
	var errs []error
	for _, ref := range fs.Args() {
		if err := s.Remove(ref); err != nil {
			errs = append(errs, explain(err, sf.dataDir))
			continue
		}
		fmt.Fprintf(env.stdout, "removed %s\n", ref)
	}
	return errors.Join(errs...)
}

func runImagePrune(ctx context.Context, env *cliEnv, args []string) error {
	fs := newFlagSet(env, "image prune", "image prune [flags]")
	var sf storeFlags
	sf.register(fs)
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if fs.NArg() != 0 {
		return usageError("image prune takes no arguments")
	}
	// Unused builders first: what they alone referenced is then collected.
	if err := runBuilderPrune(ctx, env, []string{"--data-dir", sf.dataDir}); err != nil {
		return err
	}
	s, err := sf.open(env)
	if err != nil {
		return err
	}
	rep, err := s.Prune(ctx)
	if err != nil {
		return explain(err, sf.dataDir)
	}
	fmt.Fprintf(env.stdout, "removed %d blobs (%s), %d rootfs, %d stale temporaries", rep.Blobs, humanBytes(rep.Bytes), rep.Rootfs, rep.Temps)
	if rep.InUse > 0 {
		fmt.Fprintf(env.stdout, "; kept %d rootfs in use", rep.InUse)
	}
	fmt.Fprintln(env.stdout)
	return nil
}

// explain adds what a user can do about an error.
func explain(err error, dataDir string) error {
	var hint string
	switch {
	case errors.Is(err, oci.ErrUnauthorized):
		hint = "check the credentials (docker login, or --docker-config FILE)"
	case errors.Is(err, oci.ErrUnreachable):
		hint = "check the network, or configure --mirror HOST=URL, --insecure HOST or --ca FILE"
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

// pullProgress shows progress: a line redrawn in place on a terminal, log
// lines otherwise.
type pullProgress struct {
	env  *cliEnv
	tty  bool
	mu   sync.Mutex
	last time.Time
	// per blob: bytes done and total
	done  map[v1.Hash]int64
	total map[v1.Hash]int64
	count int
	ext   map[int]bool // layers applied
	drawn bool
}

func newPullProgress(env *cliEnv) *pullProgress {
	return &pullProgress{env: env, tty: isTerminal(env.stderr), done: map[v1.Hash]int64{}, total: map[v1.Hash]int64{}, ext: map[int]bool{}}
}

func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	fi, err := f.Stat()
	return err == nil && fi.Mode()&os.ModeCharDevice != 0 && os.Getenv("TERM") != "dumb"
}

func (p *pullProgress) update(u oci.Progress) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if u.Count > 0 {
		p.count = u.Count
	}
	switch u.Phase {
	case oci.PhaseDownload, oci.PhaseCached, oci.PhaseVerified:
		if u.Index >= 0 {
			p.done[u.Blob], p.total[u.Blob] = u.Done, u.Total
		}
	case oci.PhaseApplied:
		p.ext[u.Index] = true
	}
	if !p.tty {
		log := p.env.log.WithField("image", u.Ref)
		switch u.Phase {
		case oci.PhaseResolve:
			log.WithField("digest", u.Blob.String()).Info("resolved")
		case oci.PhaseCached:
			log.Infof("layer %d/%d %s: cached", u.Index+1, u.Count, shortHash(u.Blob))
		case oci.PhaseVerified:
			log.Infof("layer %d/%d %s: downloaded %s", u.Index+1, u.Count, shortHash(u.Blob), humanBytes(u.Total))
		case oci.PhaseApplied:
			log.Infof("layer %d/%d %s: unpacked", u.Index+1, u.Count, shortHash(u.Blob))
		case oci.PhaseDone:
			log.Info("rootfs ready")
		}
		return
	}
	if u.Phase != oci.PhaseDone && time.Since(p.last) < 100*time.Millisecond {
		return
	}
	p.last = time.Now()
	var done, total int64
	for h, t := range p.total {
		done += p.done[h]
		total += t
	}
	fmt.Fprintf(p.env.stderr, "\r\033[Kdownloaded %s of %s, unpacked %d of %d layers", humanBytes(done), humanBytes(total), len(p.ext), p.count)
	p.drawn = true
}

func (p *pullProgress) finish() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.tty && p.drawn {
		fmt.Fprintln(p.env.stderr)
	}
}
