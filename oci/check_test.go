package oci

import (
	"errors"
	"testing"
)

// TestCheckImage: every endpoint is asked for the manifest and says
// whether it has the image; the first that has it is the one a pull would
// use; no blob is downloaded and nothing is written.
func TestCheckImage(t *testing.T) {
	img := threeLayerImage(t)
	origin := newTestRegistry(t)
	ref := origin.push(t, "team/app:1", img)
	empty := newTestRegistry(t)
	full := newTestRegistry(t)
	full.push(t, "team/app:1", img)
	dead := closedAddr(t)
	origin.reset()
	full.reset()

	checks, served, err := CheckImage(t.Context(), ref, WithMirrors(origin.host(), "http://"+dead, empty.host(), full.host()))
	if err != nil {
		t.Fatal(err)
	}
	if len(checks) != 4 || served != 2 {
		t.Fatalf("checks %+v, served %d; want 4 and the full mirror (2)", checks, served)
	}
	for i, want := range []error{ErrUnreachable, ErrUnknownImage, nil, nil} {
		if c := checks[i]; (want == nil) != (c.Err == nil) || (want != nil && !errors.Is(c.Err, want)) || c.Mirror != (i < 3) {
			t.Errorf("endpoint %d (%s): %v, want %v", i, c.Label(), c.Err, want)
		}
	}
	if checks[0].Label() != "mirror "+dead || checks[3].Label() != origin.host() {
		t.Errorf("labels %q, %q", checks[0].Label(), checks[3].Label())
	}
	if n := full.count("/blobs/") + origin.count("/blobs/"); n != 0 {
		t.Errorf("%d blob requests: a check downloads no layer", n)
	}

	if _, served, err := CheckImage(t.Context(), origin.host()+"/team/none:1"); err != nil || served != -1 {
		t.Errorf("a missing image: served %d, %v", served, err)
	}
	if _, _, err := CheckImage(t.Context(), "oci:/tmp/x"); !errors.Is(err, ErrBadReference) {
		t.Errorf("oci: reference: %v", err)
	}
}

// TestCheckRegistry: each mirror and the origin are asked whether they
// answer the registry API.
func TestCheckRegistry(t *testing.T) {
	origin := newTestRegistry(t)
	dead := closedAddr(t)
	checks, err := CheckRegistry(t.Context(), origin.host(), WithMirrors(origin.host(), "http://"+dead))
	if err != nil {
		t.Fatal(err)
	}
	if len(checks) != 2 || !errors.Is(checks[0].Err, ErrUnreachable) || !checks[0].Mirror || checks[1].Err != nil || checks[1].Mirror {
		t.Errorf("checks %+v", checks)
	}
}
