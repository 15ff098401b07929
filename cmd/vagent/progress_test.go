package main

import (
	"bytes"
	"io"
	"log"
	"net/http/httptest"
	"os"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/registry"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/sirupsen/logrus"
	"golang.org/x/sys/unix"

	"github.com/vieter-v/vagent/oci"
)

// screen renders what a terminal shows for out: text, "\n", "\r", and
// the escapes the bars use (ESC[nA cursor up, ESC[J erase below, ESC[K
// erase the line's rest).
func screen(out string) []string {
	var lines []string
	row, col := 0, 0
	put := func(r rune) {
		for len(lines) <= row {
			lines = append(lines, "")
		}
		l := []rune(lines[row])
		for len(l) < col {
			l = append(l, ' ')
		}
		if col < len(l) {
			l[col] = r
		} else {
			l = append(l, r)
		}
		lines[row] = string(l)
		col++
	}
	esc := regexp.MustCompile(`^\x1b\[(\d*)([AJK])`)
	for i := 0; i < len(out); {
		if m := esc.FindStringSubmatch(out[i:]); m != nil {
			switch m[2] {
			case "A":
				n := 1
				if m[1] != "" {
					n = int(m[1][0] - '0')
					for _, d := range m[1][1:] {
						n = n*10 + int(d-'0')
					}
				}
				row = max(row-n, 0)
			case "J":
				if row < len(lines) {
					lines = lines[:row+1]
					lines[row] = string([]rune(lines[row])[:min(col, len([]rune(lines[row])))])
				}
			case "K":
				if row < len(lines) {
					lines[row] = string([]rune(lines[row])[:min(col, len([]rune(lines[row])))])
				}
			}
			i += len(m[0])
			continue
		}
		switch out[i] {
		case '\n':
			row, col = row+1, 0
		case '\r':
			col = 0
		default:
			put(rune(out[i]))
		}
		i++
	}
	return lines
}

// TestPullProgressBars: on a terminal each layer has its own line with
// its state, bytes, rate and ETA; a log line written during the pull
// lands above the bars, whole, and the bars are drawn again below it.
func TestPullProgressBars(t *testing.T) {
	var out bytes.Buffer
	lg := logrus.New()
	lg.SetOutput(&out)
	lg.SetFormatter(&logrus.TextFormatter{DisableTimestamp: true, DisableColors: true})
	env := &cliEnv{stdout: io.Discard, stderr: &out, log: lg}
	p := newPullProgress(env)
	p.tty = true // as newPullProgress does on a terminal
	p.logOut = lg.Out
	lg.SetOutput(p)
	t0 := time.Unix(1700000000, 0)
	clock := t0
	p.now = func() time.Time { return clock }
	h := func(c string) v1.Hash { return v1.Hash{Algorithm: "sha256", Hex: strings.Repeat(c, 64)} }

	p.update(oci.Progress{Ref: "r", Phase: oci.PhaseResolve, Blob: h("f"), Index: -1})
	p.update(oci.Progress{Ref: "r", Phase: oci.PhaseCached, Blob: h("a"), Index: 0, Count: 2, Done: 1 << 20, Total: 1 << 20})
	p.update(oci.Progress{Ref: "r", Phase: oci.PhaseDownload, Blob: h("b"), Index: 1, Count: 2, Done: 0, Total: 8 << 20})
	clock = t0.Add(2 * time.Second)
	p.update(oci.Progress{Ref: "r", Phase: oci.PhaseDownload, Blob: h("b"), Index: 1, Count: 2, Done: 4 << 20, Total: 8 << 20})
	lg.Warn("a log line during the pull")
	got := screen(out.String())
	want := []string{
		`level=warning msg="a log line during the pull"`,
		`layer 1/2 aaaaaaaaaaaa  cached        1.0 MiB / 1.0 MiB`,
		`layer 2/2 bbbbbbbbbbbb  downloading   4.0 MiB / 8.0 MiB    2.0 MiB/s  ETA 2s`,
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("screen:\n%s\nwant:\n%s\nraw: %q", strings.Join(got, "\n"), strings.Join(want, "\n"), out.String())
	}

	clock = t0.Add(3 * time.Second)
	p.update(oci.Progress{Ref: "r", Phase: oci.PhaseVerified, Blob: h("b"), Index: 1, Count: 2, Done: 8 << 20, Total: 8 << 20})
	p.update(oci.Progress{Ref: "r", Phase: oci.PhaseApplied, Blob: h("a"), Index: 0, Count: 2})
	p.update(oci.Progress{Ref: "r", Phase: oci.PhaseApplied, Blob: h("b"), Index: 1, Count: 2})
	p.finish()
	lg.Warn("after")
	got = screen(out.String())
	if len(got) != 4 || !strings.HasPrefix(got[1], "layer 1/2 aaaaaaaaaaaa  unpacked") || !strings.HasPrefix(got[2], "layer 2/2 bbbbbbbbbbbb  unpacked") ||
		got[3] != `level=warning msg=after` {
		t.Errorf("final screen:\n%s", strings.Join(got, "\n"))
	}
	if lg.Out != &out {
		t.Error("finish did not give the logger its output back")
	}
}

// openPTY returns a pseudo-terminal's controller and terminal ends.
func openPTY(t *testing.T) (ptm, pts *os.File) {
	t.Helper()
	ptm, err := os.OpenFile("/dev/ptmx", os.O_RDWR|unix.O_NOCTTY, 0)
	if err != nil {
		t.Skipf("no pseudo-terminals: %v", err)
	}
	t.Cleanup(func() { ptm.Close() })
	if err := unix.IoctlSetPointerInt(int(ptm.Fd()), unix.TIOCSPTLCK, 0); err != nil {
		t.Fatal(err)
	}
	n, err := unix.IoctlGetUint32(int(ptm.Fd()), unix.TIOCGPTN)
	if err != nil {
		t.Fatal(err)
	}
	pts, err = os.OpenFile("/dev/pts/"+itoa(int(n)), os.O_RDWR|unix.O_NOCTTY, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pts.Close() })
	return ptm, pts
}

func itoa(n int) string {
	if n < 10 {
		return string(rune('0' + n))
	}
	return itoa(n/10) + string(rune('0'+n%10))
}

// TestImagePullOnTerminal: `vagent image pull` with stderr on a terminal
// (a pseudo-terminal) draws a line per layer, and not the log lines of a
// pull without a terminal.
func TestImagePullOnTerminal(t *testing.T) {
	ptm, pts := openPTY(t)
	t.Setenv("TERM", "xterm")
	srv := httptest.NewServer(registry.New(registry.Logger(log.New(io.Discard, "", 0))))
	t.Cleanup(srv.Close)
	ref := strings.TrimPrefix(srv.URL, "http://") + "/builder/arch:base-devel"
	r, _ := name.ParseReference(ref)
	img, err := random.Image(2048, 3)
	if err != nil {
		t.Fatal(err)
	}
	if err := remote.Write(r, img); err != nil {
		t.Fatal(err)
	}
	read := make(chan string)
	go func() {
		b, _ := io.ReadAll(ptm) // until the terminal end is closed
		read <- string(b)
	}()
	var stdout bytes.Buffer
	code := run1([]string{"image", "pull", "--data-dir", t.TempDir(), ref}, &stdout, pts)
	pts.Close()
	out := strings.ReplaceAll(<-read, "\r\n", "\n") // the terminal's ONLCR
	if code != 0 {
		t.Fatalf("exit %d: %q", code, out)
	}
	lines := screen(out)
	wantUnpackedBars(t, lines, 3)
	// The store logs "rootfs ready" while the bars are up: the line is
	// whole, above them.
	ready := -1
	for i, l := range lines {
		if strings.Contains(l, "layer 1/3") && strings.Contains(l, "downloaded") {
			t.Errorf("log lines instead of bars:\n%s", strings.Join(lines, "\n"))
		}
		if strings.Contains(l, `msg="rootfs ready"`) {
			ready = i
			if !strings.HasPrefix(l, "time=") || strings.Contains(l, "layer ") {
				t.Errorf("a log line mixed with a bar: %q", l)
			}
		}
	}
	if ready < 0 || ready > len(lines)-4 || !strings.HasPrefix(lines[len(lines)-1], "layer 3/3") {
		t.Errorf("the log line is not above the bars:\n%s", strings.Join(lines, "\n"))
	}
}

// wantUnpackedBars fails t unless the screen lines show each of n layers
// unpacked.
func wantUnpackedBars(t *testing.T, lines []string, n int) {
	t.Helper()
	for i := 1; i <= n; i++ {
		re := regexp.MustCompile(`^layer ` + itoa(i) + `/` + itoa(n) + ` [0-9a-f]{12}  unpacked`)
		found := false
		for _, l := range lines {
			found = found || re.MatchString(l)
		}
		if !found {
			t.Errorf("no line for layer %d on the terminal:\n%s", i, strings.Join(lines, "\n"))
		}
	}
}
