package testkit

import (
	"archive/tar"
	"bytes"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path"
	"runtime"
	"sort"
	"strings"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// BusyboxPath is the static busybox that BusyboxImage packs (Debian
// package busybox-static).
const BusyboxPath = "/bin/busybox"

// kitEpoch is the modification time of every entry in the images the kit
// builds in Go, so that they are byte-for-byte reproducible.
var kitEpoch = time.Date(2024, 1, 1, 0, 0, 0, 0, time.UTC)

// BuilderUID and BuilderGID are the ids of the unprivileged "builder" user
// in the kit's images (makepkg refuses to run as root).
const (
	BuilderUID = 1000
	BuilderGID = 1000
)

// BusyboxImage returns a single-layer OCI image holding the host's static
// busybox as /bin/busybox with a symlink per applet (/bin/sh among them),
// /etc/passwd and /etc/group with root and builder (1000), /root,
// /home/builder and /tmp. The image is deterministic: the same busybox
// binary gives the same digest. Its config names linux and the host's
// architecture (the busybox binary is the host's).
func BusyboxImage() (v1.Image, error) {
	layer, err := busyboxLayerTar()
	if err != nil {
		return nil, fmt.Errorf("busybox image: %w", err)
	}
	l, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) {
		return io.NopCloser(bytes.NewReader(layer)), nil
	}, tarball.WithMediaType(types.OCILayer))
	if err != nil {
		return nil, fmt.Errorf("busybox image: %w", err)
	}
	img := mutate.MediaType(empty.Image, types.OCIManifestSchema1)
	img = mutate.ConfigMediaType(img, types.OCIConfigJSON)
	img, err = mutate.Append(img, mutate.Addendum{
		Layer:     l,
		MediaType: types.OCILayer,
		History: v1.History{
			Created:   v1.Time{Time: kitEpoch},
			CreatedBy: "vagent testkit: busybox-static " + BusyboxPath,
		},
	})
	if err != nil {
		return nil, fmt.Errorf("busybox image: %w", err)
	}
	cf, err := img.ConfigFile()
	if err != nil {
		return nil, fmt.Errorf("busybox image: %w", err)
	}
	cf = cf.DeepCopy()
	cf.Architecture = runtime.GOARCH
	cf.OS = "linux"
	cf.Created = v1.Time{Time: kitEpoch}
	cf.Config.Env = []string{"PATH=/usr/sbin:/usr/bin:/sbin:/bin"}
	cf.Config.Cmd = []string{"/bin/sh"}
	img, err = mutate.ConfigFile(img, cf)
	if err != nil {
		return nil, fmt.Errorf("busybox image: %w", err)
	}
	return img, nil
}

// busyboxLayerTar returns the uncompressed layer of BusyboxImage.
func busyboxLayerTar() ([]byte, error) {
	bin, err := os.ReadFile(BusyboxPath)
	if err != nil {
		return nil, fmt.Errorf("%w: %s (Debian package busybox-static): %w", ErrToolMissing, BusyboxPath, err)
	}
	out, err := exec.Command(BusyboxPath, "--list-full").Output()
	if err != nil {
		return nil, fmt.Errorf("listing busybox applets: %w", err)
	}
	dirs := map[string]bool{"bin": true, "etc": true, "root": true, "home": true, "home/builder": true, "tmp": true}
	var applets []string
	for _, a := range strings.Fields(string(out)) {
		a = path.Clean(a)
		// Skip the binary itself and top-level oddities such as linuxrc.
		if a == "bin/busybox" || !strings.Contains(a, "/") || strings.HasPrefix(a, "../") {
			continue
		}
		applets = append(applets, a)
		for d := path.Dir(a); d != "."; d = path.Dir(d) {
			dirs[d] = true
		}
	}

	type entry struct {
		hdr  tar.Header
		body []byte
	}
	var entries []entry
	for d := range dirs {
		mode, uid := int64(0o755), 0
		switch d {
		case "tmp":
			mode = 0o1777
		case "root":
			mode = 0o700
		case "home/builder":
			mode, uid = 0o755, BuilderUID
		}
		entries = append(entries, entry{hdr: tar.Header{Typeflag: tar.TypeDir, Name: d + "/", Mode: mode, Uid: uid, Gid: uid}})
	}
	entries = append(entries,
		entry{hdr: tar.Header{Typeflag: tar.TypeReg, Name: "bin/busybox", Mode: 0o755}, body: bin},
		entry{hdr: tar.Header{Typeflag: tar.TypeReg, Name: "etc/passwd", Mode: 0o644}, body: []byte(
			"root:x:0:0:root:/root:/bin/sh\n" +
				fmt.Sprintf("builder:x:%d:%d:builder:/home/builder:/bin/sh\n", BuilderUID, BuilderGID))},
		entry{hdr: tar.Header{Typeflag: tar.TypeReg, Name: "etc/group", Mode: 0o644}, body: []byte(
			"root:x:0:\n" + fmt.Sprintf("builder:x:%d:\n", BuilderGID))},
	)
	for _, a := range applets {
		entries = append(entries, entry{hdr: tar.Header{Typeflag: tar.TypeSymlink, Name: a, Linkname: "/bin/busybox", Mode: 0o777}})
	}
	sort.Slice(entries, func(i, j int) bool {
		return strings.TrimSuffix(entries[i].hdr.Name, "/") < strings.TrimSuffix(entries[j].hdr.Name, "/")
	})

	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, e := range entries {
		h := e.hdr
		h.Size = int64(len(e.body))
		h.ModTime = kitEpoch
		h.Format = tar.FormatPAX
		if err := tw.WriteHeader(&h); err != nil {
			return nil, err
		}
		if _, err := tw.Write(e.body); err != nil {
			return nil, err
		}
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}
