package testkit

import (
	"io"
	"os/exec"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// uncompressed returns l's tar stream. gzip and zstd layers are
// decompressed by pigz and zstd when they are installed: Go's gzip under
// the race detector took half a minute for the Arch-like image's base
// layer, which is what `make test` runs. The tests that read layers check
// the image's contents, not the decompressor.
func uncompressed(t testing.TB, l v1.Layer) io.ReadCloser {
	t.Helper()
	mt, err := l.MediaType()
	if err != nil {
		t.Fatal(err)
	}
	var tool string
	switch mt {
	case types.OCILayer, types.DockerLayer:
		tool = "pigz"
	case types.OCILayerZStd:
		tool = "zstd"
	}
	bin, lookErr := exec.LookPath(tool)
	if tool == "" || lookErr != nil {
		rc, err := l.Uncompressed()
		if err != nil {
			t.Fatal(err)
		}
		return rc
	}
	blob, err := l.Compressed()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.CommandContext(t.Context(), bin, "-dc")
	cmd.Stdin = blob
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	return &cmdReader{ReadCloser: out, cmd: cmd, blob: blob, t: t}
}

// cmdReader reads a decompressor's output; Close waits for it and fails
// the test when it failed (a truncated or corrupt blob).
type cmdReader struct {
	io.ReadCloser
	cmd  *exec.Cmd
	blob io.Closer
	t    testing.TB
}

func (r *cmdReader) Close() error {
	// Drain, so the decompressor checks the whole stream.
	_, _ = io.Copy(io.Discard, r.ReadCloser)
	err := r.cmd.Wait()
	r.blob.Close()
	if err != nil {
		r.t.Errorf("%s -dc: %v", r.cmd.Path, err)
	}
	return err
}
