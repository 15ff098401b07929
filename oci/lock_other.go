//go:build !unix

package oci

import (
	"context"
	"errors"
	"os"
)

func flock(*os.File, bool, bool) (bool, error)       { return false, errors.ErrUnsupported }
func flockCtx(context.Context, *os.File, bool) error { return errors.ErrUnsupported }
