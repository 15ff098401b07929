package oci

import (
	"fmt"
	"io"
	"strings"
)

// Budget bounds what unpacking one image may cost, over all its layers
// together. A layer that goes over it fails the unpack with
// ErrBudgetExceeded (and, in a Store, the partial tree is removed like
// that of any failed unpack).
//
// A zero field means the default (DefaultBudget). A negative one is an
// error.
type Budget struct {
	// Bytes bounds two sums, each on its own: the decompressed bytes of
	// the layer streams (headers, file data, padding, anything after the
	// tar's end), and the declared sizes of the regular files (the
	// logical size of a sparse file, holes included). The second is
	// checked at each file's header, before anything is written, so a
	// small entry that declares terabytes is refused at once.
	// Default: 32 GiB.
	Bytes int64
	// Entries bounds the number of tar entries (every header, whiteouts
	// included). The extractor remembers each name a layer creates (to
	// apply whiteouts to lower layers only), so this also bounds its
	// memory. Default: 1 Mi (1,048,576).
	Entries int64
	// Depth bounds the number of components of an entry name (and of a
	// hardlink target): "usr/lib/x" is 3. Missing parents are created
	// one level at a time. Default: 256.
	Depth int
}

// DefaultBudget is the budget used when none is set. It fits real images
// with a wide margin: the project's Arch-like test image has 13,906
// entries, 410 MB and paths of at most 10 components; the largest images
// in common use (CUDA and machine learning stacks, a full TeX Live) reach
// a few tens of GiB and a few hundred thousand entries. Linux's PATH_MAX
// (4096 bytes) allows about 2048 components. The entry count also bounds
// the extractor's memory (the names a layer created, kept for whiteouts).
var DefaultBudget = Budget{Bytes: 32 << 30, Entries: 1 << 20, Depth: 256}

// withDefaults fills the zero fields of b from DefaultBudget.
func (b Budget) withDefaults() (Budget, error) {
	if b.Bytes < 0 || b.Entries < 0 || b.Depth < 0 {
		return b, fmt.Errorf("negative budget %+v", b)
	}
	if b.Bytes == 0 {
		b.Bytes = DefaultBudget.Bytes
	}
	if b.Entries == 0 {
		b.Entries = DefaultBudget.Entries
	}
	if b.Depth == 0 {
		b.Depth = DefaultBudget.Depth
	}
	return b, nil
}

// spend keeps the account of one image's unpack against its budget. It is
// used from the extractor's goroutine only.
type spend struct {
	limit    Budget
	streamed int64 // decompressed bytes read
	declared int64 // declared sizes of regular files
	entries  int64
}

func budgetExceeded(format string, args ...any) error {
	return fmt.Errorf("%w: "+format, append([]any{ErrBudgetExceeded}, args...)...)
}

// entry counts one tar header.
func (s *spend) entry() error {
	s.entries++
	if s.entries > s.limit.Entries {
		return budgetExceeded("more than %d entries", s.limit.Entries)
	}
	return nil
}

// depth checks the number of components of a clean relative name.
func (s *spend) depth(name string) error {
	if name == "." {
		return nil
	}
	if d := strings.Count(name, "/") + 1; d > s.limit.Depth {
		return budgetExceeded("path %d components deep, budget %d", d, s.limit.Depth)
	}
	return nil
}

// file reserves the declared size of a regular file.
func (s *spend) file(size int64) error {
	if size < 0 || size > s.limit.Bytes-s.declared {
		return budgetExceeded("files of more than %d bytes (this one declares %d)", s.limit.Bytes, size)
	}
	s.declared += size
	return nil
}

// reader counts the decompressed stream r against the budget.
func (s *spend) reader(r io.Reader) io.Reader { return &spendReader{r: r, s: s} }

type spendReader struct {
	r io.Reader
	s *spend
}

func (sr *spendReader) Read(b []byte) (int, error) {
	if left := sr.s.limit.Bytes - sr.s.streamed; int64(len(b)) > left {
		// Read one byte past the budget, to tell a stream that ends
		// exactly at it from one that goes on.
		b = b[:left+1]
	}
	n, err := sr.r.Read(b)
	sr.s.streamed += int64(n)
	if sr.s.streamed > sr.s.limit.Bytes {
		return n, budgetExceeded("more than %d bytes decompressed", sr.s.limit.Bytes)
	}
	return n, err
}
