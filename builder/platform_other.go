//go:build !linux

package builder

import (
	"context"
	"errors"
	"io"
	"os"

	"github.com/vieter-v/vagent/oci"
)

func sameFile(*os.File, string) bool                 { return false }
func linkTree(context.Context, string, string) error { return errors.ErrUnsupported }
func upperTar(context.Context, io.Writer, string, string, uint32, uint32, uint32, oci.Budget) error {
	return errors.ErrUnsupported
}

var errCrossDevice = errors.New("source and destination on different file systems")
