package main

import (
	"bytes"
	"io"
	"log"
	"net"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/registry"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"
)

// vagent runs agentBinary with args (execVagent).
func vagent(t *testing.T, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	var o, e bytes.Buffer
	code = execVagent(t, args, &o, &e)
	return code, o.String(), e.String()
}

// TestImageCommands runs pull, ls, rm and prune end to end against an
// in-process registry.
func TestImageCommands(t *testing.T) {
	srv := httptest.NewServer(registry.New(registry.Logger(log.New(io.Discard, "", 0))))
	t.Cleanup(srv.Close)
	host := strings.TrimPrefix(srv.URL, "http://")
	ref := host + "/builder/arch:base-devel"
	r, _ := name.ParseReference(ref)
	img, err := random.Image(4096, 3)
	if err != nil {
		t.Fatal(err)
	}
	if err := remote.Write(r, img); err != nil {
		t.Fatal(err)
	}
	data := t.TempDir()

	code, out, errOut := vagent(t, "image", "pull", "--data-dir", data, ref)
	if code != 0 {
		t.Fatalf("pull: exit %d: %s", code, errOut)
	}
	d, _ := img.Digest()
	if !strings.Contains(out, "digest: "+d.String()) || !strings.Contains(out, "rootfs: "+filepath.Join(data, "images", "rootfs", d.Hex)) {
		t.Errorf("pull output:\n%s", out)
	}
	if !strings.Contains(errOut, "downloaded") || !strings.Contains(errOut, "unpacked") {
		t.Errorf("pull did not log progress lines:\n%s", errOut)
	}

	if _, _, errOut = vagent(t, "image", "pull", "--data-dir", data, ref); strings.Contains(errOut, "downloaded") || !strings.Contains(errOut, "resolved") {
		t.Errorf("second pull did not use the cache:\n%s", errOut)
	}

	code, out, _ = vagent(t, "image", "ls", "--data-dir", data)
	if code != 0 || !strings.Contains(out, ref) || !strings.Contains(out, d.Hex[:12]) || !strings.Contains(out, "yes") {
		t.Errorf("ls: exit %d:\n%s", code, out)
	}
	if code, out, _ = vagent(t, "image", "rm", "--data-dir", data, ref); code != 0 || !strings.Contains(out, "removed "+ref) {
		t.Errorf("rm: exit %d:\n%s", code, out)
	}
	if _, out, _ = vagent(t, "image", "ls", "-q", "--data-dir", data); out != "" {
		t.Errorf("ls after rm:\n%s", out)
	}
	if code, out, _ = vagent(t, "image", "prune", "--data-dir", data); code != 0 || !strings.HasPrefix(out, "removed ") {
		t.Errorf("prune: exit %d:\n%s", code, out)
	}
}

func TestImageErrors(t *testing.T) {
	srv := httptest.NewServer(registry.New(registry.Logger(log.New(io.Discard, "", 0))))
	t.Cleanup(srv.Close)
	host := strings.TrimPrefix(srv.URL, "http://")
	closed := func() string {
		l, _ := net.Listen("tcp", "127.0.0.1:0")
		defer l.Close()
		return l.Addr().String()
	}
	dead, deadMirror := closed(), closed()
	data := t.TempDir()
	tests := []struct {
		name string
		args []string
		code int
		want []string
	}{
		{"unknown image", []string{"pull", host + "/nothing:1"}, 1, []string{"unknown image", "hint:"}},
		{"unreachable names the mirrors", []string{"pull", "--registry-mirror", dead + "=http://" + deadMirror, dead + "/x:1"}, 1, []string{"registry unreachable", "mirror " + deadMirror, "--registry-mirror"}},
		{"bad mirror flag", []string{"pull", "--registry-mirror", "nohost", "x:1"}, 2, []string{"HOST=URL"}},
		{"deprecated --mirror", []string{"pull", "--mirror", "nohost", "x:1"}, 2, []string{"--mirror is deprecated: use --registry-mirror", "HOST=URL"}},
		{"bad platform", []string{"pull", "--platform", "linux", "x:1"}, 2, []string{"OS/ARCH"}},
		{"bad reference", []string{"pull", "Bad Ref"}, 1, []string{"invalid image reference"}},
		{"missing layout", []string{"pull", "oci:" + data + "/none:v1"}, 1, []string{"unknown image"}},
		{"rm unknown", []string{"rm", "alpine:3"}, 1, []string{"image not in store", "docker.io/library/alpine:3"}},
		{"no subcommand", nil, 2, []string{"Usage:", "vagent image [command]"}},
		{"unknown subcommand", []string{"frob"}, 2, []string{"unknown image command"}},
		{"pull without ref", []string{"pull"}, 2, []string{"one image reference"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			args := append([]string{"image"}, tt.args...)
			if len(tt.args) > 0 && tt.args[0] != "frob" {
				args = append([]string{"image", tt.args[0], "--data-dir", data}, tt.args[1:]...)
			}
			code, _, errOut := vagent(t, args...)
			if code != tt.code {
				t.Errorf("exit %d, want %d; stderr:\n%s", code, tt.code, errOut)
			}
			for _, w := range tt.want {
				if !strings.Contains(errOut, w) {
					t.Errorf("stderr does not say %q:\n%s", w, errOut)
				}
			}
		})
	}
}

// TestImagePullUnreachable: with the registry gone, a pull that only finds
// the store's copy fails unless --prefer-cache accepts that copy; a digest
// reference cannot change and needs no registry.
func TestImagePullUnreachable(t *testing.T) {
	srv := httptest.NewServer(registry.New(registry.Logger(log.New(io.Discard, "", 0))))
	ref := strings.TrimPrefix(srv.URL, "http://") + "/builder/arch:base-devel"
	r, _ := name.ParseReference(ref)
	img, err := random.Image(1024, 1)
	if err != nil {
		t.Fatal(err)
	}
	if err := remote.Write(r, img); err != nil {
		t.Fatal(err)
	}
	d, _ := img.Digest()
	data := t.TempDir()
	if code, _, errOut := vagent(t, "image", "pull", ref, "--data-dir", data); code != 0 {
		t.Fatalf("pull: exit %d: %s", code, errOut)
	}
	srv.Close()
	for _, tc := range []struct {
		name string
		args []string
		code int
		want string
	}{
		{"cached copy refused", []string{ref}, 1, "could not check the registry for a newer image"},
		{"cached copy accepted", []string{ref, "--prefer-cache"}, 0, ""},
		{"digest", []string{strings.TrimSuffix(ref, ":base-devel") + "@" + d.String()}, 0, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, out, errOut := vagent(t, append([]string{"image", "pull", "--data-dir", data}, tc.args...)...)
			if code != tc.code || !strings.Contains(errOut, tc.want) {
				t.Errorf("exit %d, want %d; stderr %q lacks %q", code, tc.code, errOut, tc.want)
			}
			if !strings.Contains(out, "digest: "+d.String()) {
				t.Errorf("stdout does not show the store's copy:\n%s", out)
			}
		})
	}
}
