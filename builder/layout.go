package builder

import (
	"context"
	"strings"

	v1 "github.com/google/go-containerregistry/pkg/v1"
)

// Annotations of the builders' entries in the layout's index.json.
const (
	annotationBase    = "dev.vieter.vagent.base"
	annotationBuilder = "dev.vieter.vagent.builder"
)

// The OCI image layout DIR/oci holds every builder image; oci.Layout
// writes it (blobs before the index entry that uses them, index.json
// replaced atomically, collection under the same lock).

// LayoutTag is the tag (annotation org.opencontainers.image.ref.name) of
// the current builder of base in the builders' OCI layout: the canonical
// base reference with ':' and '@' replaced by '-'
// ("docker.io/library/archlinux-base-devel"), because tools split
// "DIR:TAG" at a colon (umoci at the last one). The full reference is in
// the annotation dev.vieter.vagent.base.
func LayoutTag(base string) string {
	return strings.NewReplacer(":", "-", "@", "-").Replace(base)
}

// addImage writes img into the layout and makes it the tagged image of
// base (the previous builder of base keeps its entry, untagged, until it
// is removed).
func (m *Manager) addImage(ctx context.Context, img v1.Image, base, id string) error {
	lay, err := m.layout()
	if err != nil {
		return err
	}
	return lay.Put(ctx, img, LayoutTag(base), map[string]string{annotationBase: base, annotationBuilder: id})
}

// removeImage drops builder id from the index and collects the blobs no
// remaining entry uses.
func (c *Catalogue) removeImage(ctx context.Context, id string) (blobs int, bytes int64, err error) {
	lay, err := c.layout()
	if err != nil {
		return 0, 0, err
	}
	return lay.Retain(ctx, func(d v1.Descriptor) bool { return d.Annotations[annotationBuilder] != id })
}
