package job

import (
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestSplitCredentials(t *testing.T) {
	for _, tc := range []struct {
		in, url string
		creds   *urlCredentials
	}{
		{"https://example.org/pkg.git", "https://example.org/pkg.git", nil},
		{"https://user:pa%40ss%22@example.org:8443/a/pkg.git?x=1", "https://example.org:8443/a/pkg.git?x=1", &urlCredentials{"user", `pa@ss"`}},
		{"http://ghp_token@127.0.0.1:1234/PKGBUILD", "http://127.0.0.1:1234/PKGBUILD", &urlCredentials{"ghp_token", ""}},
		{"https://u:@[::1]:80/x", "https://[::1]:80/x", &urlCredentials{"u", ""}},
		// the user of ssh is not a secret (and ssh takes no password)
		{"ssh://git@example.org/pkg.git", "ssh://git@example.org/pkg.git", nil},
		{"git@example.org:pkg.git", "git@example.org:pkg.git", nil},
		{"https://example.org/a@b", "https://example.org/a@b", nil},
	} {
		url, creds := splitCredentials(tc.in)
		if url != tc.url || !cmp.Equal(creds, tc.creds, cmp.AllowUnexported(urlCredentials{})) {
			t.Errorf("splitCredentials(%q) = %q, %+v; want %q, %+v", tc.in, url, creds, tc.url, tc.creds)
		}
	}
	if got := string((&urlCredentials{"u", "p:w"}).file()); got != "u\np:w\n" {
		t.Errorf("file %q", got)
	}
}
