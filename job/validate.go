package job

import (
	"fmt"
	"net/url"
	"path"
	"regexp"
	"strings"
	"unicode"

	"github.com/vieter-v/vagent/internal/pacman"
	"github.com/vieter-v/vagent/oci"
	"github.com/vieter-v/vagent/poll"
)

// transportRE matches git's "<transport>::<address>" remote-helper syntax
// (ext::, fd::...).
var transportRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9+.-]*::`)

const maxField = 4096

func isSpaceOrControl(r rune) bool { return unicode.IsSpace(r) || unicode.IsControl(r) }

// ValidateJob checks every string of a job from a server before anything
// runs. localImages allows base images that are not registry references.
func ValidateJob(j poll.Job, localImages bool) error {
	if j.Kind != "git" && j.Kind != "url" {
		return fmt.Errorf("%w: kind %q is neither git nor url", ErrInvalidJob, j.Kind)
	}
	if err := validateURL(j.Kind, j.URL); err != nil {
		return err
	}
	if err := validateBranch(j.Branch); err != nil {
		return err
	}
	if j.Kind == "url" && j.Branch != "" {
		return fmt.Errorf("%w: branch is only for git sources", ErrInvalidJob)
	}
	if err := ValidatePath(j.Path); err != nil {
		return err
	}
	if err := ValidateRepo(j.Repo); err != nil {
		return err
	}
	if err := validateBaseImage(j.BaseImage, localImages); err != nil {
		return err
	}
	if j.Timeout < 0 {
		return fmt.Errorf("%w: negative timeout %d", ErrInvalidJob, j.Timeout)
	}
	return nil
}

// ValidateRepo checks a repository name.
func ValidateRepo(repo string) error {
	if pacman.ValidateName(repo) != nil {
		return fmt.Errorf("%w: repository name %q", ErrInvalidJob, repo)
	}
	return nil
}

func validateURL(kind, s string) error {
	switch {
	case s == "":
		return fmt.Errorf("%w: empty url", ErrInvalidJob)
	case len(s) > maxField:
		return fmt.Errorf("%w: url longer than %d bytes", ErrInvalidJob, maxField)
	case strings.ContainsFunc(s, isSpaceOrControl):
		return fmt.Errorf("%w: url %q has whitespace or control characters", ErrInvalidJob, poll.RedactURL(s))
	case strings.HasPrefix(s, "-"):
		return fmt.Errorf("%w: url %q starts with '-'", ErrInvalidJob, poll.RedactURL(s))
	}
	// Messages show the URL without its userinfo: it may hold a password.
	shown := poll.RedactURL(s)
	if kind == "git" {
		if transportRE.MatchString(s) {
			return fmt.Errorf("%w: url %q uses a git remote helper (transport::)", ErrInvalidJob, shown)
		}
		if u, err := url.Parse(s); err == nil && u.Scheme != "" && strings.Contains(s, "://") {
			switch u.Scheme {
			case "http", "https", "git", "ssh", "git+ssh", "ssh+git":
			default:
				return fmt.Errorf("%w: url %q: scheme %q not allowed", ErrInvalidJob, shown, u.Scheme)
			}
			if strings.HasPrefix(u.Host, "-") || strings.HasPrefix(u.User.Username(), "-") {
				return fmt.Errorf("%w: url %q: host or user starts with '-'", ErrInvalidJob, shown)
			}
			return validateUserinfo(u, shown)
		}
		return nil
	}
	u, err := url.Parse(s)
	if err != nil {
		return fmt.Errorf("%w: url %q does not parse", ErrInvalidJob, shown)
	}
	if (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return fmt.Errorf("%w: url %q is not an http(s) URL", ErrInvalidJob, shown)
	}
	return validateUserinfo(u, shown)
}

// validateUserinfo checks the user and password of a URL: build.sh hands
// them to git and curl as lines, so no control character once decoded
// (%0A); a password only where git and curl can send it without a command
// line (http and https: see splitCredentials), since git passes an ssh
// URL's userinfo to ssh as an argument.
func validateUserinfo(u *url.URL, shown string) error {
	if u.User == nil {
		return nil
	}
	password, hasPassword := u.User.Password()
	switch {
	case strings.ContainsFunc(u.User.Username()+password, unicode.IsControl):
		return fmt.Errorf("%w: url %q: user or password has control characters", ErrInvalidJob, shown)
	case u.Scheme == "git":
		return fmt.Errorf("%w: url %q: git:// takes no user or password", ErrInvalidJob, shown)
	case hasPassword && u.Scheme != "http" && u.Scheme != "https":
		return fmt.Errorf("%w: url %q: a password only in http(s) URLs (ssh uses keys)", ErrInvalidJob, shown)
	}
	return nil
}

// validateBranch follows git check-ref-format for a branch name.
func validateBranch(b string) error {
	if b == "" {
		return nil
	}
	bad := len(b) > 255 || strings.HasPrefix(b, "-") || strings.HasPrefix(b, "/") || strings.HasSuffix(b, "/") ||
		strings.HasSuffix(b, ".") || strings.HasSuffix(b, ".lock") || strings.Contains(b, "..") ||
		strings.Contains(b, "@{") || strings.Contains(b, "//") || b == "@" ||
		strings.ContainsAny(b, "~^:?*[\\") || strings.ContainsFunc(b, isSpaceOrControl)
	for _, c := range strings.Split(b, "/") {
		bad = bad || strings.HasPrefix(c, ".")
	}
	if bad {
		return fmt.Errorf("%w: branch %q is not a valid branch name", ErrInvalidJob, b)
	}
	return nil
}

// validatePath accepts a relative path below the clone: no "..", not
// absolute, no control characters. Symbolic links are checked in the
// container, where they resolve.
// ValidatePath checks a job's path: relative, inside the repository (no
// ".." component), not an option, without control characters.
func ValidatePath(p string) error {
	if p == "" {
		return nil
	}
	bad := len(p) > maxField || strings.HasPrefix(p, "/") || strings.HasPrefix(p, "-") ||
		strings.ContainsFunc(p, unicode.IsControl)
	for _, c := range strings.Split(p, "/") {
		bad = bad || c == ".."
	}
	if bad || path.Clean(p) == ".." {
		return fmt.Errorf("%w: path %q must be relative and stay inside the repository", ErrInvalidJob, p)
	}
	return nil
}

func validateBaseImage(s string, local bool) error {
	if s == "" {
		return fmt.Errorf("%w: empty base_image", ErrInvalidJob)
	}
	if len(s) > maxField || strings.HasPrefix(s, "-") || strings.ContainsFunc(s, isSpaceOrControl) {
		return fmt.Errorf("%w: base_image %q", ErrInvalidJob, s)
	}
	ref, err := oci.ParseReference(s)
	if err != nil {
		return fmt.Errorf("%w: base_image %q: %w", ErrInvalidJob, s, err)
	}
	if ref.Transport != oci.TransportRegistry && !local {
		return fmt.Errorf("%w: base_image %q is not a registry reference", ErrInvalidJob, s)
	}
	return nil
}
