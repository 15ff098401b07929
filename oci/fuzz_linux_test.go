package oci

import (
	"archive/tar"
	"bytes"
	"context"
	"strings"
	"testing"
)

// scriptLayers turns a fuzz script into layers: lines "TYPE NAME [LINK]"
// with TYPE one of f (file), d (dir), l (symlink), h (hardlink),
// c (char device), b (block device), p (fifo); "---" starts a new layer;
// "@OUT@" stands for the absolute path of the directory next to the root.
func scriptLayers(script, outside string) [][]tent {
	script = strings.ReplaceAll(script, "@OUT@", outside)
	var layers [][]tent
	var cur []tent
	for line := range strings.SplitSeq(script, "\n") {
		if line == "---" {
			layers = append(layers, cur)
			cur = nil
			continue
		}
		f := strings.SplitN(line, " ", 3)
		if len(f) < 2 || f[1] == "" {
			continue
		}
		e := tent{name: f[1], mode: 0o755}
		if len(f) == 3 {
			e.link = f[2]
		}
		switch f[0] {
		case "f":
			e.typ, e.body = tar.TypeReg, "pwned"
		case "d":
			e.typ = tar.TypeDir
		case "l":
			e.typ = tar.TypeSymlink
		case "h":
			e.typ = tar.TypeLink
		case "c":
			e.typ = tar.TypeChar
		case "b":
			e.typ = tar.TypeBlock
		case "p":
			e.typ = tar.TypeFifo
		default:
			continue
		}
		cur = append(cur, e)
	}
	return append(layers, cur)
}

// FuzzUnpack applies fuzzed layers (see scriptLayers). The invariant: no
// file is ever created or changed outside the target directory.
func FuzzUnpack(f *testing.F) {
	f.Add("f a\n---\nf .wh.a")
	f.Add("f /abs\nd /tmp\nf @OUT@/canary\nh /l @OUT@/canary")   // absolute names, confined
	f.Add("h a b\nh b c\nf c\nh x nowhere")                      // hardlinks before their target
	f.Add("l evil @OUT@\nh evil/x later\n---\nh evil/canary /x") // deferred links through a symlink
	f.Fuzz(func(t *testing.T, script string) {
		if len(script) > 4096 {
			return
		}
		root, outside := sandboxDirs(t)
		layers := scriptLayers(script, outside)
		var raws [][]byte
		for _, l := range layers {
			var b bytes.Buffer
			tw := tar.NewWriter(&b)
			ok := true
			for _, e := range l {
				hdr := &tar.Header{Name: e.name, Typeflag: e.typ, Linkname: e.link, Mode: e.mode, ModTime: testTime, Format: tar.FormatPAX}
				if e.typ == tar.TypeReg {
					hdr.Size = int64(len(e.body))
				}
				if tw.WriteHeader(hdr) != nil {
					ok = false
					break
				}
				tw.Write([]byte(e.body))
			}
			if !ok || tw.Close() != nil {
				return // names archive/tar cannot encode
			}
			raws = append(raws, b.Bytes())
		}
		applyRaw(t, root, raws)
		checkOutside(t, root, outside)
	})
}

// FuzzUnpackTar applies one fuzzed raw tar stream.
func FuzzUnpackTar(f *testing.F) {
	f.Add(tarOf(f, file("a", "x"), symlink("l", "/"), file("l/b", "y")))
	f.Add(tarOf(f, file("../x", "x")))
	f.Add(tarOf(f, file("/x", "x"), hardlink("/l", "/x"), hardlink("m", "later"), file("later", "")))
	f.Add(sparseTar("sparse", 1<<20))
	f.Fuzz(func(t *testing.T, raw []byte) {
		if len(raw) > 1<<20 {
			return
		}
		root, outside := sandboxDirs(t)
		applyRaw(t, root, [][]byte{raw})
		checkOutside(t, root, outside)
	})
}

// applyRaw applies uncompressed layers directly (no image, no digests),
// ignoring the error: only the invariant matters.
func applyRaw(t *testing.T, root string, layers [][]byte) {
	t.Helper()
	o := defaultUnpackOptions()
	// A small budget: a mutated sparse entry may declare gigabytes, which
	// archive/tar would hand over as zeros for seconds per input.
	o.budget = Budget{Bytes: 64 << 20, Entries: 1 << 16, Depth: 256}
	if err := mkdir(root); err != nil {
		t.Fatal(err)
	}
	a, err := newApplier(root, o)
	if err != nil {
		t.Fatal(err)
	}
	defer a.close()
	for i, l := range layers {
		if err := a.applyLayer(context.Background(), bytes.NewReader(l), "layer "+string(rune('1'+i))); err != nil {
			return
		}
	}
}
