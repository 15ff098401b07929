package testkit

import (
	"archive/tar"
	"errors"
	"io"
	"os"
	"runtime"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	v1 "github.com/google/go-containerregistry/pkg/v1"
)

func requireBusybox(tb testing.TB) {
	tb.Helper()
	if _, err := os.Stat(BusyboxPath); err != nil {
		Unavailable(tb, "%s missing: install Debian package busybox-static (make deps)", BusyboxPath)
	}
}

// layerEntry is what the tests check of a tar entry.
type layerEntry struct {
	Type     byte
	Mode     int64
	Uid, Gid int
	Linkname string
	Body     string // for small regular files
}

func readLayer(t *testing.T, l v1.Layer, keepBody func(string) bool) map[string]layerEntry {
	t.Helper()
	rc, err := l.Uncompressed()
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	out := map[string]layerEntry{}
	tr := tar.NewReader(rc)
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		e := layerEntry{Type: h.Typeflag, Mode: h.Mode, Uid: h.Uid, Gid: h.Gid, Linkname: h.Linkname}
		name := strings.TrimSuffix(h.Name, "/")
		if h.Typeflag == tar.TypeReg && keepBody != nil && keepBody(name) {
			b, err := io.ReadAll(tr)
			if err != nil {
				t.Fatal(err)
			}
			e.Body = string(b)
		}
		if _, dup := out[name]; dup {
			t.Errorf("duplicate entry %s", name)
		}
		out[name] = e
	}
	return out
}

func TestBusyboxImage(t *testing.T) {
	requireBusybox(t)
	img, err := BusyboxImage()
	if err != nil {
		t.Fatal(err)
	}
	again, err := BusyboxImage()
	if err != nil {
		t.Fatal(err)
	}
	d1, _ := img.Digest()
	d2, _ := again.Digest()
	if d1 != d2 {
		t.Errorf("not deterministic: %s then %s", d1, d2)
	}
	cf, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	if cf.OS != "linux" || cf.Architecture != runtime.GOARCH {
		t.Errorf("platform %s/%s", cf.OS, cf.Architecture)
	}
	layers, err := img.Layers()
	if err != nil {
		t.Fatal(err)
	}
	if len(layers) != 1 {
		t.Fatalf("%d layers, want 1", len(layers))
	}
	got := readLayer(t, layers[0], func(n string) bool { return strings.HasPrefix(n, "etc/") })
	want := map[string]layerEntry{
		"bin/sh":       {Type: tar.TypeSymlink, Mode: 0o777, Linkname: "/bin/busybox"},
		"tmp":          {Type: tar.TypeDir, Mode: 0o1777},
		"root":         {Type: tar.TypeDir, Mode: 0o700},
		"home/builder": {Type: tar.TypeDir, Mode: 0o755, Uid: 1000, Gid: 1000},
		"etc/passwd": {Type: tar.TypeReg, Mode: 0o644, Body: "root:x:0:0:root:/root:/bin/sh\n" +
			"builder:x:1000:1000:builder:/home/builder:/bin/sh\n"},
		"etc/group": {Type: tar.TypeReg, Mode: 0o644, Body: "root:x:0:\nbuilder:x:1000:\n"},
	}
	for name, w := range want {
		if diff := cmp.Diff(w, got[name]); diff != "" {
			t.Errorf("%s (-want +got):\n%s", name, diff)
		}
	}
	if e := got["bin/busybox"]; e.Type != tar.TypeReg || e.Mode != 0o755 {
		t.Errorf("bin/busybox: %+v", e)
	}
	// Every entry's parent directory is in the layer, before it.
	for name := range got {
		if i := strings.LastIndex(name, "/"); i > 0 {
			if p, ok := got[name[:i]]; !ok || p.Type != tar.TypeDir {
				t.Errorf("%s: parent %s missing", name, name[:i])
			}
		}
	}
}
