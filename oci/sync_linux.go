package oci

import (
	"os"
	"strings"
)

// bootID identifies this boot of the kernel ("" if unknown).
func bootID() string {
	b, err := os.ReadFile("/proc/sys/kernel/random/boot_id")
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(b))
}
