package vieter

import "time"

// Job is a build job as GET /api/v1/jobs/poll hands it out. Every string in
// it comes from the server's users and is untrusted data.
type Job struct {
	TargetID  int    `json:"target_id"`
	Kind      string `json:"kind"` // "git" or "url"
	URL       string `json:"url"`
	Branch    string `json:"branch"`
	Path      string `json:"path"`
	Repo      string `json:"repo"`
	BaseImage string `json:"base_image"`
	Force     bool   `json:"force"`
	Timeout   int    `json:"timeout"` // seconds
}

// LogParams are the query parameters of a log upload.
type LogParams struct {
	TargetID   int
	Start, End time.Time
	Arch       string
	ExitCode   int
}

// Published is the data of a successful POST /:repo/publish: the package's
// name, its version ([epoch:]pkgver-pkgrel) and the arch-repos it was
// added to (none when that version was there already).
type Published struct {
	Name    string   `json:"name"`
	Version string   `json:"version"`
	Archs   []string `json:"archs"`
}
