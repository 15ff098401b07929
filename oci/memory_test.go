package oci

import (
	"archive/tar"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"sync/atomic"
	"testing"
	"time"

	"github.com/klauspost/compress/gzip"
)

// writeBigLayout writes an OCI layout whose single gzip layer holds one
// file of size bytes (zeros: the blob stays small, the tar does not) and
// 2000 small files, streaming it to disk.
func writeBigLayout(t testing.TB, dir string, size int64) {
	t.Helper()
	blobs := filepath.Join(dir, "blobs", "sha256")
	if err := os.MkdirAll(blobs, 0o755); err != nil {
		t.Fatal(err)
	}
	tmp := filepath.Join(dir, "layer.tmp")
	f, err := os.Create(tmp)
	if err != nil {
		t.Fatal(err)
	}
	h := sha256.New()
	zw, _ := gzip.NewWriterLevel(io.MultiWriter(f, h), gzip.BestSpeed)
	tw := tar.NewWriter(zw)
	tw.WriteHeader(&tar.Header{Name: "big", Typeflag: tar.TypeReg, Mode: 0o644, Size: size, ModTime: testTime})
	zeros := make([]byte, 1<<20)
	for left := size; left > 0; left -= int64(len(zeros)) {
		tw.Write(zeros[:min(left, int64(len(zeros)))])
	}
	for i := range 2000 {
		tw.WriteHeader(&tar.Header{Name: fmt.Sprintf("small/%d", i), Typeflag: tar.TypeReg, Mode: 0o644, Size: 4, ModTime: testTime})
		tw.Write([]byte("data"))
	}
	if tw.Close() != nil || zw.Close() != nil || f.Close() != nil {
		t.Fatal("writing layer")
	}
	fi, _ := os.Stat(tmp)
	layerDigest := fmt.Sprintf("%x", h.Sum(nil))
	os.Rename(tmp, filepath.Join(blobs, layerDigest))

	put := func(v any) (string, int) {
		b, _ := json.Marshal(v)
		d := fmt.Sprintf("%x", sha256.Sum256(b))
		os.WriteFile(filepath.Join(blobs, d), b, 0o644)
		return d, len(b)
	}
	cfg, cfgSize := put(map[string]any{"architecture": runtime.GOARCH, "os": "linux", "rootfs": map[string]any{"type": "layers", "diff_ids": []string{"sha256:" + layerDigest}}})
	man, manSize := put(map[string]any{
		"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
		"config": map[string]any{"mediaType": "application/vnd.oci.image.config.v1+json", "digest": "sha256:" + cfg, "size": cfgSize},
		"layers": []any{map[string]any{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": "sha256:" + layerDigest, "size": fi.Size()}},
	})
	idx, _ := json.Marshal(map[string]any{"schemaVersion": 2, "manifests": []any{map[string]any{
		"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": "sha256:" + man, "size": manSize,
		"annotations": map[string]string{refNameAnnotation: "big"},
	}}})
	os.WriteFile(filepath.Join(dir, "index.json"), idx, 0o644)
	os.WriteFile(filepath.Join(dir, "oci-layout"), []byte(`{"imageLayoutVersion":"1.0.0"}`), 0o644)
}

// peakHeap runs f and returns the peak heap in use while it ran.
func peakHeap(f func()) uint64 {
	runtime.GC()
	var peak atomic.Uint64
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		var ms runtime.MemStats
		for {
			runtime.ReadMemStats(&ms)
			if ms.HeapInuse > peak.Load() {
				peak.Store(ms.HeapInuse)
			}
			select {
			case <-stop:
				return
			case <-time.After(5 * time.Millisecond):
			}
		}
	}()
	f()
	close(stop)
	<-done
	return peak.Load()
}

// TestMemoryBounded: the heap while pulling and unpacking does not grow
// with the layer size (download -> verify -> decompress -> extract all
// stream).
func TestMemoryBounded(t *testing.T) {
	if testing.Short() {
		t.Skip("writes 220 MiB")
	}
	peaks := map[int64]uint64{}
	for _, size := range []int64{20 << 20, 200 << 20} {
		src := t.TempDir()
		writeBigLayout(t, src, size)
		s := newStore(t, "", WithSync(false))
		peaks[size] = peakHeap(func() {
			rf, err := s.Rootfs(t.Context(), "oci:"+src+":big")
			if err != nil {
				t.Fatal(err)
			}
			defer rf.Release()
			if fi, err := os.Stat(filepath.Join(rf.Dir, "big")); err != nil || fi.Size() != size {
				t.Fatalf("big: %v %v", fi, err)
			}
		})
		t.Logf("layer of %d MiB: peak heap in use %.1f MiB", size>>20, float64(peaks[size])/(1<<20))
	}
	small, big := peaks[20<<20], peaks[200<<20]
	if big > 64<<20 {
		t.Errorf("peak heap %d MiB for a 200 MiB layer, want < 64 MiB", big>>20)
	}
	if big > small+16<<20 {
		t.Errorf("heap grew with the layer: %d MiB for 20 MiB, %d MiB for 200 MiB", small>>20, big>>20)
	}
}
