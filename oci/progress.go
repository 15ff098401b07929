package oci

import v1 "github.com/google/go-containerregistry/pkg/v1"

// Phase names a step in a pull or unpack.
type Phase string

// Phases reported through Progress.
const (
	PhaseResolve  Phase = "resolve"  // reference resolved to a manifest
	PhaseDownload Phase = "download" // blob bytes arriving (Done of Total)
	PhaseCached   Phase = "cached"   // blob already in the store
	PhaseVerified Phase = "verified" // blob downloaded and verified
	PhaseExtract  Phase = "extract"  // layer being applied (Done compressed bytes of Total)
	PhaseApplied  Phase = "applied"  // layer applied
	PhaseDone     Phase = "done"     // rootfs complete
)

// Progress is one progress update.
type Progress struct {
	Ref   string  // the reference as given
	Phase Phase   // what happened
	Blob  v1.Hash // the blob or layer concerned, if any
	Index int     // layer index (0 = bottom), -1 for the config blob
	Count int     // number of layers
	Done  int64   // bytes done
	Total int64   // bytes in all (-1 if unknown)
}
