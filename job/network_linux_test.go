package job_test

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/vieter-v/vagent/internal/testkit"
	"github.com/vieter-v/vagent/internal/vieterserver"
	"github.com/vieter-v/vagent/job"
	"github.com/vieter-v/vagent/poll"
	"github.com/vieter-v/vagent/sandbox"
)

// The network part of the hostile-build suite: real builds through the
// real sandbox try to reach what the host has on its loopback and in its
// network namespace; each subtest asserts what the host saw.

// counter is an HTTP handler that counts its requests.
type counter struct{ n atomic.Int32 }

func (c *counter) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	c.n.Add(1)
	_, _ = w.Write([]byte("host secret\n"))
}

// hostListener serves h on listen until the test ends and returns its
// port.
func hostListener(t *testing.T, listen string, h http.Handler) int {
	t.Helper()
	ln, err := net.Listen("tcp", listen)
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second}
	go srv.Serve(ln) //nolint:errcheck // ends with Close
	t.Cleanup(func() { srv.Close() })
	return ln.Addr().(*net.TCPAddr).Port
}

// netProbeScript is build() of a PKGBUILD that tries to reach, from inside
// the build, what the host keeps to itself: an abstract unix socket, an
// HTTP service on 127.0.0.1, a service on the host's own address, the
// registry's blob upload API (to poison a base image), a link-local
// address; and lists the TCP ports its /proc/net/tcp shows.
func netProbeScript(abstract, loopback, hostAddr, registry, repo, blob string) string {
	return `	tcp() { perl -MIO::Socket::INET -e '$s = IO::Socket::INET->new(PeerAddr => $ARGV[0], Timeout => 5); print $s ? "CONNECTED" : "refused: $!"' "$1"; }
	echo "abstract: $(perl -MSocket -e 'socket(my $s, PF_UNIX, SOCK_STREAM, 0) or die "$!"; print connect($s, pack_sockaddr_un("\0` + abstract + `")) ? "CONNECTED" : "refused: $!"')"
	echo "loopback: $(curl -sS --max-time 5 http://` + loopback + `/ 2>&1)"
	echo "host address: $(curl -sS --max-time 5 http://` + hostAddr + `/ 2>&1)"
	echo "link-local: $(tcp 169.254.169.254:80)"
	printf '%s' '` + blob + `' >/tmp/layer
	digest=sha256:$(sha256sum /tmp/layer | cut -d' ' -f1)
	loc=$(curl -sS --max-time 5 -X POST -D - -o /dev/null http://` + registry + `/v2/` + repo + `/blobs/uploads/ 2>/dev/null | tr -d '\r' | sed -n 's/^[Ll]ocation: //p')
	if [[ -n $loc ]]; then
		case $loc in http*) ;; *) loc=http://` + registry + `$loc ;; esac
		sep='?'; [[ $loc == *'?'* ]] && sep='&'
		echo "registry upload: $(curl -sS --max-time 5 -X PUT -H 'Content-Type: application/octet-stream' --data-binary @/tmp/layer -o /dev/null -w '%{http_code}' "$loc${sep}digest=$digest" 2>&1)"
	else
		echo "registry upload: refused"
	fi
	echo "tcp ports: $(awk 'NR > 1 { split($2, a, ":"); print a[2] }' /proc/net/tcp /proc/net/tcp6 | sort -u | tr '\n' ' ')"
	echo "probes done"`
}

func TestHostileNetwork(t *testing.T) {
	e := setup(t)

	// From an isolated build, none of the host's services is reached
	// (the host's servers count nothing, the registry has no new blob,
	// /proc/net/tcp lists no host port); the same build on the host
	// network reaches them all, which shows the probes are real.
	t.Run("host services", func(t *testing.T) {
		t.Parallel()
		tok := token(t)
		var abstractConns atomic.Int32
		abs, err := net.Listen("unix", "@vagent-hostile-"+tok)
		if err != nil {
			t.Fatal(err)
		}
		defer abs.Close()
		go func() {
			for {
				c, err := abs.Accept()
				if err != nil {
					return
				}
				abstractConns.Add(1)
				c.Close()
			}
		}()
		var loop, any counter
		loopPort := hostListener(t, "127.0.0.1:0", &loop)
		anyPort := hostListener(t, ":0", &any)
		hostAddr := net.JoinHostPort(testkit.HostAddr(t).String(), strconv.Itoa(anyPort))
		repo := "hostile/" + tok
		blob := "poisoned layer " + tok
		digest := sha256Hex([]byte(blob))
		script := netProbeScript("vagent-hostile-"+tok, "127.0.0.1:"+strconv.Itoa(loopPort), hostAddr, e.reg.Host(), repo, blob)
		blobExists := func() int {
			resp, err := http.Head(e.reg.URL() + "/v2/" + repo + "/blobs/sha256:" + digest)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			return resp.StatusCode
		}
		hexPort := func(p int) string { return fmt.Sprintf("%04X", p) }
		_, regPortStr, _ := net.SplitHostPort(e.reg.Host())
		regPort, _ := strconv.Atoi(regPortStr)

		r, log := runJob(t, newBuilder(t, e), poll.Job{TargetID: 70, Kind: "url", URL: serveFile(t, hostileScript("netprobe", script)), Repo: newRepo(), BaseImage: e.base})
		wantStatus(t, r, log, poll.ResultSuccess, 0)
		if !strings.Contains(log, "probes done") {
			t.Fatalf("the probes did not run:\n%s", log)
		}
		for _, want := range []string{"abstract: refused: Connection refused", "loopback: curl: (7)", "host address: curl: (7)",
			"link-local: refused: Permission denied", "registry upload: refused"} {
			if !strings.Contains(log, want) {
				t.Errorf("isolated build: log lacks %q", want)
			}
		}
		if n := abstractConns.Load() + loop.n.Load() + any.n.Load(); n != 0 {
			t.Errorf("the host's services got %d connections from an isolated build", n)
		}
		if code := blobExists(); code != http.StatusNotFound {
			t.Errorf("after the isolated build the registry answers %d for the blob, want 404", code)
		}
		ports := portsLine(log)
		for _, p := range []int{loopPort, regPort, anyPort} {
			if strings.Contains(ports, hexPort(p)) {
				t.Errorf("the isolated build's /proc/net/tcp lists the host's port %d (%s): %s", p, hexPort(p), ports)
			}
		}

		// The control: the same build on the host network.
		r, log = runJob(t, newBuilder(t, e, job.WithNetwork(sandbox.NetworkHost)),
			poll.Job{TargetID: 71, Kind: "url", URL: serveFile(t, hostileScript("netprobehost", script)), Repo: newRepo(), BaseImage: e.base})
		wantStatus(t, r, log, poll.ResultSuccess, 0)
		for _, want := range []string{"abstract: CONNECTED", "loopback: host secret", "host address: host secret", "registry upload: 201"} {
			if !strings.Contains(log, want) {
				t.Errorf("host-network control: log lacks %q:\n%s", want, log)
			}
		}
		if strings.Contains(log, "link-local: refused: Permission denied") {
			t.Error("host-network control: link-local refused as on the isolated network")
		}
		if abstractConns.Load() == 0 || loop.n.Load() == 0 || any.n.Load() == 0 || blobExists() != http.StatusOK {
			t.Errorf("host-network control: the host saw %d abstract, %d loopback, %d interface connections, blob %d",
				abstractConns.Load(), loop.n.Load(), any.n.Load(), blobExists())
		}
		if ports := portsLine(log); !strings.Contains(ports, hexPort(loopPort)) {
			t.Errorf("host-network control: /proc/net/tcp lacks the host's port %s: %s", hexPort(loopPort), ports)
		}
	})

	// A build binds the server's port and listens on a port of its own
	// while the server restarts: the host binds both, reaches neither
	// listener, the restarted server serves the agent, which publishes
	// there, and the squatter hears nothing.
	t.Run("port squatting", func(t *testing.T) {
		t.Parallel()
		srv, err := vieterserver.New(vieterserver.WithAPIKey(apiKey))
		if err != nil {
			t.Fatal(err)
		}
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		serverAddr := ln.Addr().String()
		hs := &http.Server{Handler: srv, ReadHeaderTimeout: 10 * time.Second}
		go hs.Serve(ln) //nolint:errcheck // ends with the listener
		t.Cleanup(func() { hs.Close() })
		_, serverPort, _ := net.SplitHostPort(serverAddr)
		ownPort := testkit.FreePort(t)
		hostAddr := testkit.HostAddr(t).String()
		var mu sync.Mutex
		var hostSaw []string
		note := func(format string, args ...any) {
			mu.Lock()
			hostSaw = append(hostSaw, fmt.Sprintf(format, args...))
			mu.Unlock()
		}
		gate := serveHandler(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.URL.Path != "/squatting" {
				return
			}
			// The build holds what it could bind: the host reaches none of
			// it and binds the same ports.
			for _, a := range []string{"127.0.0.1:" + strconv.Itoa(ownPort), net.JoinHostPort(hostAddr, strconv.Itoa(ownPort))} {
				if c, err := net.DialTimeout("tcp", a, 2*time.Second); err == nil {
					c.Close()
					note("reached the build's listener at %s", a)
				}
			}
			if l, err := net.Listen("tcp", ":"+strconv.Itoa(ownPort)); err != nil {
				note("cannot bind the build's port %d: %v", ownPort, err)
			} else {
				l.Close()
			}
			// The server restarts on its port.
			ln.Close()
			ln2, err := net.Listen("tcp", serverAddr)
			if err != nil {
				note("cannot bind the server's address %s again: %v", serverAddr, err)
				return
			}
			go hs.Serve(ln2) //nolint:errcheck // ends with Close
		}))
		script := `	perl -MIO::Socket::INET -MIO::Select -e '
		$| = 1;
		my $sel = IO::Select->new;
		for my $a (@ARGV) {
			my $s = IO::Socket::INET->new(Listen => 5, LocalAddr => $a, ReuseAddr => 1);
			print "bind $a: ", ($s ? "ok" : "failed: $!"), "\n";
			$sel->add($s) if $s;
		}
		print "squatting\n";
		while (my @r = $sel->can_read(60)) {
			for my $s (@r) { my $c = $s->accept or next; my $l = <$c>; print "SQUATTER GOT: $l"; close $c }
		}' 0.0.0.0:` + serverPort + ` 127.0.0.1:` + serverPort + ` 0.0.0.0:` + strconv.Itoa(ownPort) + ` &
	squatter=$!
	sleep 1
	curl -sSf --max-time 60 ` + gate + `/squatting || return 1
	kill $squatter
	echo "squat done"`
		repo := newRepo()
		b := newBuilder(t, e, job.WithServer(serverClient(t, "http://"+serverAddr)), netOpt(e.ts.URL))
		r, log := runJob(t, b, poll.Job{TargetID: 72, Kind: "url", URL: serveFile(t, hostileScript("squat", script)), Repo: repo, BaseImage: e.base})
		wantStatus(t, r, log, poll.ResultSuccess, 0)
		if !strings.Contains(log, "squat done") || !strings.Contains(log, "bind 0.0.0.0:"+strconv.Itoa(ownPort)+": ok") {
			t.Fatalf("the squat did not run:\n%s", log)
		}
		for _, s := range hostSaw {
			t.Error(s)
		}
		if strings.Contains(log, "SQUATTER GOT") || strings.Contains(log, apiKey) {
			t.Errorf("the squatter heard something:\n%s", log)
		}
		if pkgs := srv.Packages(repo, "x86_64"); len(pkgs) != 1 {
			t.Errorf("the restarted server has %d packages, want the one the agent published", len(pkgs))
		}
	})
}

// portsLine returns the "tcp ports:" line of a probe log.
func portsLine(log string) string {
	for _, l := range strings.Split(log, "\n") {
		if strings.HasPrefix(l, "tcp ports:") {
			return l
		}
	}
	return ""
}

// TestOfflineBuild: with an offline build(), sources listed in source=()
// download, and build() runs without network: a build() that downloads
// fails, the log says why, and the host's server never saw its request;
// the same PKGBUILD without the download builds and is published.
func TestOfflineBuild(t *testing.T) {
	t.Parallel()
	e := setup(t)
	var sourceHits, buildHits atomic.Int32
	base := serveHandler(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/data.txt":
			sourceHits.Add(1)
			_, _ = w.Write([]byte("source data\n"))
		case "/in-build":
			buildHits.Add(1)
			_, _ = w.Write([]byte("downloaded in build()\n"))
		}
	}))
	pb := func(name, buildBody string) string {
		return strings.Replace(pkgbuild(name, "1", "1", `source=("data.txt::`+base+`/data.txt")`, "sha256sums=(SKIP)"),
			`build() { echo "building $pkgname"; }`, "build() {\n\tcat \"$srcdir/data.txt\"\n"+buildBody+"\n}", 1)
	}
	b := newBuilder(t, e, job.WithOfflineBuild(true))

	r, log := runJob(t, b, poll.Job{TargetID: 73, Kind: "url", URL: serveFile(t, pb("offlinecurl", "\tcurl -sSf --max-time 10 "+base+"/in-build || return 1")), Repo: newRepo(), BaseImage: e.base})
	if r.Result != poll.ResultFailure {
		t.Fatalf("a build() that downloads: %s (exit %d), want a failure\n%s", r.Result, r.ExitCode, log)
	}
	for _, want := range []string{"source data", "vagent: offline build (build_network.offline_build): the agent has cut the network",
		"vagent: build() or package() failed without network (build_network.offline_build): downloads are not possible there"} {
		if !strings.Contains(log, want) {
			t.Errorf("log lacks %q:\n%s", want, log)
		}
	}
	if sourceHits.Load() != 1 || buildHits.Load() != 0 {
		t.Errorf("the host's server saw %d source and %d build() downloads, want 1 and 0", sourceHits.Load(), buildHits.Load())
	}

	repo := newRepo()
	r, log = runJob(t, b, poll.Job{TargetID: 74, Kind: "url", URL: serveFile(t, pb("offlineok", "\techo built offline")), Repo: repo, BaseImage: e.base})
	wantStatus(t, r, log, poll.ResultSuccess, 0)
	if !strings.Contains(log, "vagent: offline build") || !strings.Contains(log, "built offline") {
		t.Errorf("log:\n%s", log)
	}
	if pkgs := e.srv.Packages(repo, "x86_64"); len(pkgs) != 1 {
		t.Errorf("repository has %+v", pkgs)
	}
	if sourceHits.Load() != 2 {
		t.Errorf("the source was downloaded %d times, want 2", sourceHits.Load())
	}
}

func sha256Hex(b []byte) string {
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:])
}
