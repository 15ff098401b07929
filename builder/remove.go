package builder

import (
	"context"
	"os"
	"path/filepath"
)

// RemoveReport says what Remove removed.
type RemoveReport struct {
	Builders int   // builders removed
	InUse    int   // builders of the base kept because a build uses them
	Blobs    int   // layout blobs removed
	Bytes    int64 // bytes of blobs removed
}

// Remove removes every builder of base (as Info.Base names it), the
// current one included, except those in use: the next build of base
// prepares a new builder. A base without builders removes nothing.
func (c *Catalogue) Remove(ctx context.Context, base string) (RemoveReport, error) {
	var rep RemoveReport
	ents, err := os.ReadDir(filepath.Join(c.dir, buildersDir))
	if err != nil {
		return rep, err
	}
	for _, e := range ents {
		id := e.Name()
		if !validID(id) {
			continue
		}
		md, err := readMeta(c.builderDir(id))
		if err != nil || md.Base != base {
			continue
		}
		if err := rep.remove(ctx, c, id); err != nil {
			return rep, err
		}
	}
	return rep, nil
}

// remove removes builder id unless it is in use, counting it in r.
func (r *RemoveReport) remove(ctx context.Context, c *Catalogue, id string) error {
	ok, blobs, size, err := c.removeBuilderBlobs(ctx, id, true)
	r.Blobs += blobs
	r.Bytes += size
	if err != nil {
		return err
	}
	if ok {
		r.Builders++
	} else {
		r.InUse++
	}
	return nil
}
