package builder

import (
	"os"

	"golang.org/x/sys/unix"
)

// sameFile reports whether the open directory f is still the one at path
// (it was not moved away to be removed).
func sameFile(f *os.File, path string) bool {
	var a, b unix.Stat_t
	if unix.Fstat(int(f.Fd()), &a) != nil || unix.Stat(path, &b) != nil {
		return false
	}
	return a.Dev == b.Dev && a.Ino == b.Ino
}
