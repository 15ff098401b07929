package oci

import (
	"os"

	"golang.org/x/sys/unix"
)

// syncfs flushes the file system that holds dir.
func syncfs(dir string) error {
	f, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer f.Close()
	return unix.Syncfs(int(f.Fd()))
}
