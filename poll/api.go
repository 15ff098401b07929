package poll

import (
	"context"
	"io"

	"github.com/vieter-v/vagent/vieter"
)

// API is what the agent needs from a Vieter server; *vieter.Client
// implements it.
type API interface {
	// Poll pops up to max jobs for arch.
	Poll(ctx context.Context, arch string, max int) ([]Job, error)
	// UploadLog uploads log as a build log and returns its id. log may be
	// read more than once (one upload per call, from its start).
	UploadLog(ctx context.Context, p vieter.LogParams, log *io.SectionReader) (int, error)
	// Requeue hands a job back to the server's queue. It is not
	// idempotent: see vieter.Sent and the package documentation.
	Requeue(ctx context.Context, targetID int, arch string, force bool) error
}

var _ API = (*vieter.Client)(nil)
