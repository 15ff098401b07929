package job

import "fmt"

// failStep is a step of a build the script names when it fails
// (/build/.vagent-failed), in the words of the footer.
type failStep struct {
	what string
	// status says what the exit status is: makepkg's (explained), a
	// command's (shown), or nothing worth showing ("").
	status string
}

// failedSteps are the steps the script records.
var failedSteps = map[string]failStep{
	"upgrade":      {"pacman -Syu failed", "command"},
	"install":      {"installing the packages of --install failed", "command"},
	"clone":        {"git clone failed", "command"},
	"download":     {"downloading the PKGBUILD failed", "command"},
	"path":         {"the path is not in the repository", ""},
	"pkgbuild":     {"the source has no PKGBUILD", ""},
	"srcinfo":      {"reading the PKGBUILD failed", "command"},
	"sources":      {"the sources failed (download, checksums, signatures or extraction)", "makepkg"},
	"dependencies": {"installing the dependencies failed", "makepkg"},
	"makepkg":      {"makepkg failed", "makepkg"},
	"pkgver()":     {"pkgver() failed", "makepkg"},
	"prepare()":    {"prepare() failed", "makepkg"},
	"build()":      {"build() failed", "makepkg"},
	"check()":      {"check() failed", "makepkg"},
	"package()":    {"package() failed", "makepkg"},
}

// makepkgStatus is what makepkg's exit statuses mean (libmakepkg's
// util/error.sh, pacman 6 and 7).
var makepkgStatus = map[int]string{
	1:  "an error",
	2:  "a configuration error",
	3:  "an invalid option",
	4:  "a function of the PKGBUILD failed",
	5:  "the package could not be created",
	6:  "a file is missing",
	7:  "the package directory is missing",
	8:  "the dependencies could not be installed",
	9:  "the dependencies could not be removed",
	10: "run as root",
	11: "file system permissions",
	12: "the PKGBUILD has an error",
	13: "a package was built already",
	14: "the package could not be installed",
	15: "makepkg's own dependencies are missing",
	16: "a PGP signature failed",
}

// failureDetail is the footer's summary of a build that failed in step
// (as the script recorded it) with exit status code, e.g. "build() failed:
// makepkg exit status 4, a function of the PKGBUILD failed". It is "" for
// an unknown step (none recorded, or a build that wrote something else).
func failureDetail(step string, code int) string {
	s, ok := failedSteps[step]
	switch {
	case !ok:
		return ""
	case s.status == "command":
		return fmt.Sprintf("%s with exit status %d", s.what, code)
	case s.status != "makepkg":
		return s.what
	}
	if m, ok := makepkgStatus[code]; ok {
		return fmt.Sprintf("%s: makepkg exit status %d, %s", s.what, code, m)
	}
	return fmt.Sprintf("%s: makepkg exit status %d", s.what, code)
}
