package oci

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/static"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// ustarBlock returns a ustar header block. archive/tar cannot write the
// sparse and malformed entries these tests need.
func ustarBlock(name string, typ byte, size int64) []byte {
	b := make([]byte, 512)
	copy(b[0:100], name)
	copy(b[100:108], "0000644\x00")
	copy(b[108:116], "0000000\x00")
	copy(b[116:124], "0000000\x00")
	copy(b[124:136], fmt.Sprintf("%011o\x00", size))
	copy(b[136:148], fmt.Sprintf("%011o\x00", testTime.Unix()))
	b[156] = typ
	copy(b[257:265], "ustar\x0000")
	copy(b[148:156], "        ")
	var sum int64
	for _, c := range b {
		sum += int64(c)
	}
	copy(b[148:156], fmt.Sprintf("%06o\x00 ", sum))
	return b
}

func pad512(b []byte) []byte {
	if r := len(b) % 512; r != 0 {
		b = append(b, make([]byte, 512-r)...)
	}
	return b
}

// paxRecords encodes PAX records ("LEN KEY=VALUE\n", LEN counting itself).
func paxRecords(kv ...string) []byte {
	var out []byte
	for i := 0; i < len(kv); i += 2 {
		rec := " " + kv[i] + "=" + kv[i+1] + "\n"
		n := len(rec)
		for n != len(strconv.Itoa(n))+len(rec) {
			n = len(strconv.Itoa(n)) + len(rec)
		}
		out = append(out, strconv.Itoa(n)+rec...)
	}
	return out
}

// sparseTar is a layer with one GNU PAX 1.0 sparse file of the given
// logical size holding two 4 KiB fragments of data, at its start and end:
// the archive is about 10 KiB whatever the size.
func sparseTar(name string, logical int64) []byte {
	const frag = 4096
	pax := paxRecords(
		"GNU.sparse.major", "1", "GNU.sparse.minor", "0",
		"GNU.sparse.name", name, "GNU.sparse.realsize", strconv.FormatInt(logical, 10),
	)
	sparseMap := pad512(fmt.Appendf(nil, "2\n0\n%d\n%d\n%d\n", frag, logical-frag, frag))
	data := bytes.Repeat([]byte{'x'}, 2*frag)
	var out []byte
	out = append(out, ustarBlock("PaxHeaders/"+name, tar.TypeXHeader, int64(len(pax)))...)
	out = append(out, pad512(pax)...)
	out = append(out, ustarBlock("GNUSparseFile.0/"+name, tar.TypeReg, int64(len(sparseMap)+len(data)))...)
	out = append(out, sparseMap...)
	out = append(out, pad512(data)...)
	return append(out, make([]byte, 1024)...)
}

// unpackRaw applies uncompressed layer tars with Unpack.
func unpackRaw(t testing.TB, root string, opts []UnpackOption, layers ...[]byte) error {
	t.Helper()
	var ls []v1.Layer
	for _, l := range layers {
		ls = append(ls, static.NewLayer(l, types.OCIUncompressedLayer))
	}
	return Unpack(t.Context(), imageOf(t, ls...), root, opts...)
}

// allocated is the disk space of a file (st_blocks).
func allocated(t testing.TB, p string) int64 {
	t.Helper()
	return lstat(t, p).Blocks * 512
}

// TestSparseHolesStayHoles: a 10 KiB PAX sparse entry declaring 1 GiB
// becomes a file of that size with about its 8 KiB of data allocated
// (archive/tar reads holes as zeros; the extractor does not write them).
func TestSparseHolesStayHoles(t *testing.T) {
	const logical = 1 << 30
	raw := sparseTar("big", logical)
	root, outside := sandboxDirs(t)
	if err := unpackRaw(t, root, nil, raw, tarOf(t, file("small", "s"))); err != nil {
		t.Fatalf("unpack: %v", err)
	}
	checkOutside(t, root, outside)
	p := filepath.Join(root, "big")
	st := lstat(t, p)
	alloc := allocated(t, p)
	t.Logf("archive %d bytes; file size %d, allocated %d bytes", len(raw), st.Size, alloc)
	if st.Size != logical {
		t.Errorf("size %d, want %d", st.Size, logical)
	}
	if alloc > 256<<10 {
		t.Errorf("allocated %d bytes for 8 KiB of data: holes were written", alloc)
	}
	f, err := os.Open(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	for _, c := range []struct {
		off  int64
		want byte
	}{{0, 'x'}, {4095, 'x'}, {4096, 0}, {logical / 2, 0}, {logical - 4097, 0}, {logical - 4096, 'x'}, {logical - 1, 'x'}} {
		b := make([]byte, 1)
		if _, err := f.ReadAt(b, c.off); err != nil || b[0] != c.want {
			t.Errorf("byte at %d = %q, %v; want %q", c.off, b[0], err, c.want)
		}
	}

	// Zeros in an ordinary entry are not written either, and a file
	// ending in zeros keeps its size.
	body := strings.Repeat("\x00", 3<<20) + "end" + strings.Repeat("\x00", 5000)
	root2 := mustUnpack(t, nil, []tent{file("zeros", body)})
	if got := readFile(t, filepath.Join(root2, "zeros")); got != body {
		t.Errorf("zeros: content differs (%d bytes, want %d)", len(got), len(body))
	}
	if alloc := allocated(t, filepath.Join(root2, "zeros")); alloc > 64<<10 {
		t.Errorf("zeros: allocated %d bytes for 3 bytes of data", alloc)
	}
}

// hugeLayer is an uncompressed layer produced as it is read: one regular
// file of size bytes of zeros. Its digest is made up; the tests that use it
// never read it to the end.
type hugeLayer struct {
	size int64
}

func (l hugeLayer) tarStream() io.Reader {
	hdr := ustarBlock("huge", tar.TypeReg, l.size)
	return io.MultiReader(bytes.NewReader(hdr), io.LimitReader(zeroReader{}, l.size), bytes.NewReader(make([]byte, 1024)))
}

type zeroReader struct{}

func (zeroReader) Read(b []byte) (int, error) {
	clear(b)
	return len(b), nil
}

func (l hugeLayer) Digest() (v1.Hash, error) {
	return v1.Hash{Algorithm: "sha256", Hex: strings.Repeat("0", 64)}, nil
}
func (l hugeLayer) DiffID() (v1.Hash, error) { return l.Digest() }
func (l hugeLayer) Compressed() (io.ReadCloser, error) {
	return io.NopCloser(l.tarStream()), nil
}
func (l hugeLayer) Uncompressed() (io.ReadCloser, error) { return l.Compressed() }
func (l hugeLayer) Size() (int64, error)                 { return l.size + 2048, nil }
func (l hugeLayer) MediaType() (types.MediaType, error) {
	return types.OCIUncompressedLayer, nil
}

// TestCancelHugeEntry: cancelling the unpack of a layer holding one 6 GiB
// entry returns within a second, from inside the entry's copy loop.
func TestCancelHugeEntry(t *testing.T) {
	root, outside := sandboxDirs(t)
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	var cancelled time.Time
	progress := func(p Progress) {
		// Well inside the entry (the extractor reads 1 MiB at a time).
		if p.Phase == PhaseExtract && p.Done >= 64<<20 && cancelled.IsZero() {
			cancelled = time.Now()
			cancel()
		}
	}
	img := imageOf(t, hugeLayer{size: 6 << 30})
	err := Unpack(ctx, img, root, WithUnpackProgress(progress))
	took := time.Since(cancelled)
	if cancelled.IsZero() {
		t.Fatalf("unpack ended before it was cancelled: %v", err)
	}
	t.Logf("returned %v after the cancel: %v", took, err)
	if !errors.Is(err, context.Canceled) {
		t.Errorf("error %v is not context.Canceled", err)
	}
	if took > time.Second {
		t.Errorf("returned %v after the cancel, want within 1s", took)
	}
	checkOutside(t, root, outside)
}

// TestBudgets: each bomb goes over a small budget set with the Store's
// WithBudget and fails the pull with ErrBudgetExceeded, leaving no tree
// and no temporary; the same image with one less fits.
func TestBudgets(t *testing.T) {
	deep := func(n int) string { return strings.Repeat("d/", n-1) + "f" }
	manyFiles := func(n int) []byte {
		var ents []tent
		for i := range n {
			ents = append(ents, file(fmt.Sprintf("f%d", i), ""))
		}
		return tarOf(t, ents...)
	}
	withTrailing := func(n int) []byte {
		// A valid tar followed by zeros: decompressed bytes that are
		// no file's content.
		return append(tarOf(t, file("a", "a")), make([]byte, n)...)
	}
	tests := []struct {
		name     string
		budget   Budget
		bomb, ok [][]byte // uncompressed layers, gzipped for the pull
		want     string
	}{{
		name:   "decompressed bytes, file content",
		budget: Budget{Bytes: 4 << 20},
		bomb:   [][]byte{tarOf(t, file("zeros", strings.Repeat("\x00", 4<<20+1)))},
		ok:     [][]byte{tarOf(t, file("zeros", strings.Repeat("\x00", 3<<20)))},
		want:   "declares 4194305",
	}, {
		name:   "decompressed bytes, over two layers",
		budget: Budget{Bytes: 4 << 20},
		bomb:   [][]byte{tarOf(t, file("a", strings.Repeat("a", 2<<20))), tarOf(t, file("b", strings.Repeat("b", 2<<20+1)))},
		ok:     [][]byte{tarOf(t, file("a", strings.Repeat("a", 2<<20))), tarOf(t, file("b", strings.Repeat("b", 1<<20)))},
		want:   "files of more than 4194304 bytes",
	}, {
		name:   "decompressed bytes after the tar's end",
		budget: Budget{Bytes: 4 << 20},
		bomb:   [][]byte{withTrailing(4 << 20)},
		ok:     [][]byte{withTrailing(3 << 20)},
		want:   "more than 4194304 bytes decompressed",
	}, {
		name:   "sparse logical size",
		budget: Budget{Bytes: 4 << 20},
		bomb:   [][]byte{sparseTar("big", 4<<20+1)},
		ok:     [][]byte{sparseTar("big", 4<<20-64<<10)},
		want:   "declares 4194305",
	}, {
		name:   "sparse entry declaring a petabyte, default budget",
		budget: Budget{},
		bomb:   [][]byte{sparseTar("big", 1<<50)},
		ok:     [][]byte{sparseTar("big", 1<<20)},
		want:   "declares 1125899906842624",
	}, {
		name:   "entries",
		budget: Budget{Entries: 1000},
		bomb:   [][]byte{manyFiles(600), manyFiles(401)},
		ok:     [][]byte{manyFiles(600), manyFiles(400)},
		want:   "more than 1000 entries",
	}, {
		name:   "depth",
		budget: Budget{Depth: 32},
		bomb:   [][]byte{tarOf(t, file(deep(33), ""))},
		ok:     [][]byte{tarOf(t, file(deep(32), ""))},
		want:   "33 components deep",
	}, {
		name:   "depth of a hardlink target",
		budget: Budget{Depth: 32},
		bomb:   [][]byte{tarOf(t, file("f", ""), hardlink("l", "/"+deep(33)))},
		ok:     [][]byte{tarOf(t, file(deep(32), ""), hardlink("l", "/"+deep(32)))},
		want:   "33 components deep",
	}}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			reg := newTestRegistry(t)
			image := func(layers [][]byte) v1.Image {
				var ls []v1.Layer
				for _, l := range layers {
					ls = append(ls, static.NewLayer(gzipped(t, l), types.OCILayer))
				}
				return imageOf(t, ls...)
			}
			bomb := reg.push(t, "bomb:1", image(tt.bomb))
			ok := reg.push(t, "ok:1", image(tt.ok))
			dir := t.TempDir()
			s := newStore(t, dir, WithBudget(tt.budget))
			_, err := s.Rootfs(t.Context(), bomb)
			if !errors.Is(err, ErrBudgetExceeded) || !strings.Contains(err.Error(), tt.want) || !strings.Contains(err.Error(), "layer ") {
				t.Errorf("bomb: error %v, want ErrBudgetExceeded naming the layer and %q", err, tt.want)
			}
			for _, d := range []string{"rootfs", "tmp"} {
				if ents, _ := os.ReadDir(filepath.Join(dir, d)); len(ents) != 0 {
					t.Errorf("%s/ not empty after the failed unpack: %v", d, ents)
				}
			}
			rootfsOf(t, s, ok) // fails the test on error
		})
	}
	t.Run("negative", func(t *testing.T) {
		if _, err := NewStore(t.TempDir(), WithBudget(Budget{Entries: -1})); err == nil {
			t.Error("a negative budget was accepted")
		}
	})
}

// TestImageTreesUnreachable: the store's directories are 0700, so no other
// host user can reach a file of an image tree (setuid-root binaries
// included), even when the data directory above them is searchable.
func TestImageTreesUnreachable(t *testing.T) {
	requireRoot(t)
	// t.TempDir's directories are 0700 themselves: open them up, so that
	// only the store's modes can stop the other user.
	base := t.TempDir()
	for _, d := range []string{filepath.Dir(base), base} {
		if err := os.Chmod(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	data := filepath.Join(base, "data") // created by NewStore
	reg := newTestRegistry(t)
	ref := reg.push(t, "suid:1", imageOf(t, layerOf(t, "gzip",
		dir("usr"), dir("usr/bin"),
		tent{name: "usr/bin/su", typ: tar.TypeReg, mode: 0o4755, body: "#!/bin/sh\nid\n"},
	)))
	s := newStore(t, filepath.Join(data, "images"))
	rf := rootfsOf(t, s, ref)
	suid := filepath.Join(rf.Dir, "usr/bin/su")
	if st := lstat(t, suid); st.Mode&0o7777 != 0o4755 || st.Uid != 0 {
		t.Fatalf("su: mode %o owner %d, want a setuid-root file in the tree", st.Mode&0o7777, st.Uid)
	}
	// The data directory is shared with the sandbox, whose mapped root
	// must traverse it to reach runs/: NewStore creates it searchable.
	if m := lstat(t, data).Mode; m&0o001 == 0 {
		t.Errorf("data dir created with mode %o: the sandbox's mapped root cannot search it", m&0o7777)
	}
	for _, d := range []string{"", "rootfs", "tmp", "blobs", "blobs/sha256"} {
		if m := lstat(t, filepath.Join(s.Dir(), d)).Mode & 0o7777; m != 0o700 {
			t.Errorf("images/%s: mode %o, want 700", d, m)
		}
	}
	// As nobody: the data directory is reachable, nothing below images/.
	asNobody := func(p string) error {
		cmd := exec.Command("stat", p)
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
		out, err := cmd.CombinedOutput()
		if err != nil {
			return fmt.Errorf("%w: %s", err, bytes.TrimSpace(out))
		}
		return nil
	}
	if err := asNobody(data); err != nil {
		t.Fatalf("nobody cannot stat the data dir, the test proves nothing: %v", err)
	}
	for _, p := range []string{suid, rf.Dir, filepath.Join(s.Dir(), "rootfs")} {
		err := asNobody(p)
		if err == nil {
			t.Errorf("nobody can stat %s", p)
		} else if !strings.Contains(err.Error(), "Permission denied") {
			t.Errorf("stat %s as nobody: %v, want permission denied", p, err)
		}
	}
}
