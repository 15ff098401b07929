package testkit

import (
	"net/http"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/remote"
)

func TestRegistryServesPushedImage(t *testing.T) {
	r := StartTestRegistry(t)
	img, err := BusyboxImage()
	if err != nil {
		t.Fatal(err)
	}
	ref := r.Host() + "/test/busybox:latest"
	if err := Push(t.Context(), img, ref); err != nil {
		t.Fatal(err)
	}
	pulled, err := remote.Image(mustRef(t, ref), remote.WithContext(t.Context()))
	if err != nil {
		t.Fatal(err)
	}
	want, _ := img.Digest()
	got, err := pulled.Digest()
	if err != nil {
		t.Fatal(err)
	}
	if got != want {
		t.Fatalf("pulled digest %s, pushed %s", got, want)
	}
	// The blob itself comes back, not only the manifest.
	layers, err := pulled.Layers()
	if err != nil || len(layers) != 1 {
		t.Fatalf("pulled layers: %d, %v", len(layers), err)
	}
	rc, err := layers[0].Compressed()
	if err != nil {
		t.Fatal(err)
	}
	rc.Close()

	if err := r.Close(); err != nil {
		t.Fatal(err)
	}
	if err := r.Close(); err != nil { // idempotent
		t.Fatalf("second Close: %v", err)
	}
	c := &http.Client{Timeout: time.Second}
	if resp, err := c.Get(r.URL() + "/v2/"); err == nil {
		resp.Body.Close()
		t.Fatalf("registry still answers after Close: %s", resp.Status)
	}
	if r.cmd.ProcessState == nil {
		t.Fatal("registry process not reaped after Close")
	}
}

func TestTwoRegistriesAreIndependent(t *testing.T) {
	a, b := StartTestRegistry(t), StartTestRegistry(t)
	if a.Host() == b.Host() {
		t.Fatalf("both registries on %s", a.Host())
	}
	img, err := BusyboxImage()
	if err != nil {
		t.Fatal(err)
	}
	if err := Push(t.Context(), img, a.Host()+"/only/in-a:v1"); err != nil {
		t.Fatal(err)
	}
	if _, err := remote.Head(mustRef(t, b.Host()+"/only/in-a:v1"), remote.WithContext(t.Context())); err == nil {
		t.Fatal("image pushed to one registry is visible in the other")
	}
}

func mustRef(t *testing.T, s string) name.Reference {
	t.Helper()
	r, err := name.ParseReference(s)
	if err != nil {
		t.Fatal(err)
	}
	return r
}
