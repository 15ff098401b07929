//go:build !linux

package sandbox

// CheckHost reports that sandboxes need Linux.
func CheckHost(dataDir string, opts ...Option) ([]Requirement, error) {
	return []Requirement{{Name: "operating system", Detail: "vagent runs builds on Linux only"}}, nil
}
