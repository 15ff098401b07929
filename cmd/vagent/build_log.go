package main

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sync"

	"github.com/vieter-v/vagent/job"
)

// buildLog is the log file `vagent build` keeps: everything the build
// writes to standard output goes to a temporary in the output directory
// too, renamed when the build ends to devtools' name,
// <pkgbase>-<[epoch:]pkgver-pkgrel>-<arch>-build.log (arch: the build
// host's, as makepkg's CARCH), or to vagent-build.log when the build
// ended before its .SRCINFO named the package. The file belongs to the
// invoking user, like the packages.
type buildLog struct {
	out      io.Writer
	dir      string
	uid, gid int

	mu   sync.Mutex
	f    *os.File
	werr error // the first write error of the file: the file is then left alone
}

// logFallback is the build log's name when the package is not known.
const logFallback = "vagent-build.log"

// createBuildLog opens the temporary log in dir (created, for the invoking
// user, when missing) that tees what is written to out.
func createBuildLog(out io.Writer, dir string, uid, gid int) (*buildLog, error) {
	if err := mkdirOwned(dir, uid, gid); err != nil {
		return nil, fmt.Errorf("output directory: %w", err)
	}
	f, err := os.CreateTemp(dir, ".vagent-*"+job.BuildLogSuffix)
	if err != nil {
		return nil, fmt.Errorf("build log: %w", err)
	}
	err = f.Chmod(0o644)
	if err == nil && (uid >= 0 || gid >= 0) {
		err = f.Chown(uid, gid)
	}
	if err != nil {
		f.Close()
		os.Remove(f.Name())
		return nil, fmt.Errorf("build log: %w", err)
	}
	return &buildLog{out: out, dir: dir, uid: uid, gid: gid, f: f}, nil
}

// mkdirOwned creates dir and its missing parents, owned by uid:gid (-1
// keeps the process's).
func mkdirOwned(dir string, uid, gid int) error {
	if _, err := os.Stat(dir); err == nil || !errors.Is(err, os.ErrNotExist) {
		return err
	}
	if err := mkdirOwned(filepath.Dir(dir), uid, gid); err != nil {
		return err
	}
	if err := os.Mkdir(dir, 0o755); err != nil && !errors.Is(err, os.ErrExist) {
		return err
	}
	return os.Lchown(dir, uid, gid)
}

// Write writes p to the output and to the file; a failing file (a full
// disk) does not stop the output, and finish reports it.
func (l *buildLog) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.werr == nil {
		if _, err := l.f.Write(p); err != nil {
			l.werr = err
		}
	}
	return l.out.Write(p)
}

// finish names the log after the package of info (nil: not known) and
// returns its path.
func (l *buildLog) finish(info *job.SrcInfo, arch string) (string, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	err := errors.Join(l.werr, l.f.Close())
	name := logFallback
	if info != nil && info.Base != "" {
		name = fmt.Sprintf("%s-%s-%s-build.log", info.Base, info.FullVersion(), arch)
	}
	dst := filepath.Join(l.dir, name)
	if err == nil {
		err = os.Rename(l.f.Name(), dst)
	}
	if err != nil {
		os.Remove(l.f.Name())
		return "", fmt.Errorf("build log %s: %w", dst, err)
	}
	return dst, nil
}
