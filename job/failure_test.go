package job

import "testing"

func TestFailureDetail(t *testing.T) {
	for _, tc := range []struct {
		step string
		code int
		want string
	}{
		{"build()", 4, "build() failed: makepkg exit status 4, a function of the PKGBUILD failed"},
		{"package()", 4, "package() failed: makepkg exit status 4, a function of the PKGBUILD failed"},
		{"dependencies", 8, "installing the dependencies failed: makepkg exit status 8, the dependencies could not be installed"},
		{"sources", 1, "the sources failed (download, checksums, signatures or extraction): makepkg exit status 1, an error"},
		{"makepkg", 99, "makepkg failed: makepkg exit status 99"},
		{"clone", 128, "git clone failed with exit status 128"},
		{"path", 1, "the path is not in the repository"},
		{"", 1, ""},
		{"build() forged by a PKGBUILD", 4, ""},
	} {
		if got := failureDetail(tc.step, tc.code); got != tc.want {
			t.Errorf("failureDetail(%q, %d) = %q, want %q", tc.step, tc.code, got, tc.want)
		}
	}
}
