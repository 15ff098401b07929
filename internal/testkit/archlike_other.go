//go:build !linux

package testkit

import (
	"context"
	"errors"
	"fmt"
)

func buildArchLike(context.Context, options, recipe, string) error {
	return fmt.Errorf("building the arch-like image: %w", errors.ErrUnsupported)
}
