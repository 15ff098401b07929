package vieterserver

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"errors"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"
)

// archRepo is one architecture of a repository.
type archRepo struct {
	pkgs    map[string]*repoPkg // by pkgname
	db      []byte              // cached <repo>.db, nil when stale
	filesDB []byte
}

type repoPkg struct {
	*pkgFile
	filename string
	data     []byte
}

// Package describes a package in an arch-repo.
type Package struct {
	Repo, Arch, Filename string
	Info                 PkgInfo
	Files                []string
	SHA256               string
}

// Packages returns the packages of repo/arch sorted by name.
func (s *Server) Packages(repo, arch string) []Package {
	s.mu.Lock()
	defer s.mu.Unlock()
	ar := s.repos[repo][arch]
	if ar == nil {
		return nil
	}
	var out []Package
	for _, p := range ar.pkgs {
		out = append(out, Package{Repo: repo, Arch: arch, Filename: p.filename, Info: p.info,
			Files: append([]string(nil), p.files...), SHA256: p.sha256})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Info.Name < out[j].Info.Name })
	return out
}

// RepoDir returns where repo/arch is written, or "" without a data dir.
func (s *Server) RepoDir(repo, arch string) string {
	if s.opts.dataDir == "" {
		return ""
	}
	return filepath.Join(s.opts.dataDir, "repos", repo, arch)
}

// Published is what POST /:repo/publish answers in its envelope's data.
type Published struct {
	Name    string   `json:"name"`
	Version string   `json:"version"`
	Archs   []string `json:"archs"`
}

// Publish adds a package file to repo as POST /:repo/publish does. It
// reports whether the package was added (false when the same or a newer
// version was already there).
func (s *Server) Publish(repo string, data []byte) (bool, error) {
	p, err := s.publish(repo, data)
	return err == nil && len(p.Archs) > 0, err
}

// PublishMetaPackages publishes an empty "any" package (version 1-1) for
// each name into repo: what a builder needs of base-devel and git on a
// machine without Arch repositories (the test stack, make demo-stack).
func (s *Server) PublishMetaPackages(repo string, names ...string) error {
	for _, name := range names {
		pkg, err := MakePackage(PkgInfo{Name: name, Version: "1-1", Arch: "any", Desc: "meta-package of the Vieter test server"}, nil, Zstd)
		if err != nil {
			return err
		}
		if _, err := s.Publish(repo, pkg); err != nil {
			return err
		}
	}
	return nil
}

// publish adds a package and returns the arch-repos it was added to.
func (s *Server) publish(repo string, data []byte) (Published, error) {
	if !validName(repo) {
		return Published{}, errors.New("invalid repository name")
	}
	pf, err := readPackage(data)
	if err != nil {
		return Published{}, err
	}
	ext := ".pkg.tar"
	switch {
	case bytes.HasPrefix(data, magicZstd):
		ext += ".zst"
	case bytes.HasPrefix(data, magicGzip):
		ext += ".gz"
	}
	filename := pf.info.Name + "-" + pf.info.Version + "-" + pf.info.Arch + ext

	s.mu.Lock()
	defer s.mu.Unlock()
	arches := s.repos[repo]
	if arches == nil {
		arches = map[string]*archRepo{}
		s.repos[repo] = arches
	}
	targets := []string{pf.info.Arch}
	if pf.info.Arch == "any" {
		targets = []string{s.opts.defaultArch}
		for a := range arches {
			if a != s.opts.defaultArch {
				targets = append(targets, a)
			}
		}
	}
	out := Published{Name: pf.info.Name, Version: pf.info.Version, Archs: []string{}}
	for _, a := range targets {
		ar := arches[a]
		if ar == nil {
			ar = &archRepo{pkgs: map[string]*repoPkg{}}
			arches[a] = ar
		}
		old := ar.pkgs[pf.info.Name]
		if old != nil && VerCmp(pf.info.Version, old.info.Version) <= 0 {
			continue
		}
		ar.pkgs[pf.info.Name] = &repoPkg{pkgFile: pf, filename: filename, data: data}
		ar.db, ar.filesDB = nil, nil
		out.Archs = append(out.Archs, a)
		if err := s.saveRepoLocked(repo, a, ar, old); err != nil {
			s.opts.log.WithError(err).Error("saving repository")
		}
	}
	return out, nil
}

func (s *Server) handlePublish(w http.ResponseWriter, r *http.Request) {
	if !hasLength(r) {
		w.WriteHeader(http.StatusLengthRequired)
		return
	}
	repo := r.PathValue("repo")
	if !validName(repo) || repo == "api" || repo == "health" {
		writeJSON(w, http.StatusBadRequest, "Invalid repository name.", "")
		return
	}
	if r.ContentLength > maxPackageSize {
		writeJSON(w, http.StatusRequestEntityTooLarge, "Package too large.", "")
		return
	}
	data, err := io.ReadAll(io.LimitReader(r.Body, maxPackageSize))
	if err != nil || int64(len(data)) != r.ContentLength {
		writeJSON(w, http.StatusBadRequest, "Incomplete body.", "")
		return
	}
	p, err := s.publish(repo, data)
	if err != nil {
		// Vieter answers an unreadable archive with a bare 500.
		s.opts.log.WithError(err).Warn("publish: adding the package")
		w.WriteHeader(http.StatusInternalServerError)
		return
	}
	writeJSON(w, http.StatusOK, "", p)
}

func (s *Server) handleRepoFile(w http.ResponseWriter, r *http.Request) {
	repo, arch, file := r.PathValue("repo"), r.PathValue("arch"), r.PathValue("file")
	s.mu.Lock()
	ar := s.repos[repo][arch]
	var (
		body  []byte
		ctype = "application/octet-stream"
		found bool
	)
	switch file {
	case repo + ".db", repo + ".db.tar.gz", repo + ".files", repo + ".files.tar.gz":
		if ar == nil || len(ar.pkgs) == 0 {
			if !s.opts.emptyDB {
				break
			}
			ar = &archRepo{pkgs: map[string]*repoPkg{}}
		}
		db, files := ar.databases()
		body, found = db, true
		if strings.HasPrefix(file, repo+".files") {
			body = files
		}
	default:
		if ar == nil {
			break
		}
		if strings.Contains(file, ".pkg") {
			for _, p := range ar.pkgs {
				if p.filename == file {
					body, found = p.data, true
				}
			}
			break
		}
		// <pkgname>-<pkgver>-<pkgrel>: the version check of a non-forced build.
		for _, p := range ar.pkgs {
			if p.info.Name+"-"+p.info.Version == file {
				body, found, ctype = p.desc(p.filename), true, "text/plain; charset=utf-8"
			}
		}
	}
	s.mu.Unlock()
	if !found {
		w.WriteHeader(http.StatusNotFound)
		return
	}
	w.Header().Set("Content-Type", ctype)
	w.Header().Set("Content-Length", strconv.Itoa(len(body)))
	w.WriteHeader(http.StatusOK)
	if r.Method != http.MethodHead {
		_, _ = w.Write(body)
	}
}

// databases returns the gzip tars of <repo>.db and <repo>.files, building
// them when stale. The caller holds the server's lock.
func (ar *archRepo) databases() (db, files []byte) {
	if ar.db != nil {
		return ar.db, ar.filesDB
	}
	names := make([]string, 0, len(ar.pkgs))
	for n := range ar.pkgs {
		names = append(names, n)
	}
	sort.Strings(names)
	build := func(withFiles bool) []byte {
		var buf bytes.Buffer
		zw := gzip.NewWriter(&buf)
		tw := tar.NewWriter(zw)
		mtime := time.Unix(0, 0)
		for _, n := range names {
			p := ar.pkgs[n]
			dir := p.info.Name + "-" + p.info.Version
			_ = tw.WriteHeader(&tar.Header{Name: dir + "/", Typeflag: tar.TypeDir, Mode: 0o755, ModTime: mtime})
			add := func(name string, b []byte) {
				_ = tw.WriteHeader(&tar.Header{Name: dir + "/" + name, Typeflag: tar.TypeReg, Mode: 0o644, Size: int64(len(b)), ModTime: mtime})
				_, _ = tw.Write(b)
			}
			add("desc", p.desc(p.filename))
			if withFiles {
				add("files", p.filesEntry())
			}
		}
		_ = tw.Close()
		_ = zw.Close()
		return buf.Bytes()
	}
	ar.db, ar.filesDB = build(false), build(true)
	return ar.db, ar.filesDB
}

// saveRepoLocked writes the arch-repo's package and databases to the data
// dir, removing the replaced package file.
func (s *Server) saveRepoLocked(repo, arch string, ar *archRepo, old *repoPkg) error {
	dir := s.RepoDir(repo, arch)
	if dir == "" {
		return nil
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	if old != nil {
		_ = os.Remove(filepath.Join(dir, old.filename))
	}
	var errs []error
	for _, rp := range ar.pkgs {
		fn := filepath.Join(dir, rp.filename)
		if _, err := os.Stat(fn); err != nil {
			errs = append(errs, os.WriteFile(fn, rp.data, 0o644))
		}
	}
	db, files := ar.databases()
	for _, name := range []string{repo + ".db", repo + ".db.tar.gz"} {
		errs = append(errs, os.WriteFile(filepath.Join(dir, name), db, 0o644))
	}
	for _, name := range []string{repo + ".files", repo + ".files.tar.gz"} {
		errs = append(errs, os.WriteFile(filepath.Join(dir, name), files, 0o644))
	}
	return errors.Join(errs...)
}
