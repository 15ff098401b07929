package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/sirupsen/logrus"
	"github.com/vieter-v/vagent/internal/config"
)

// notifySocket listens where $NOTIFY_SOCKET points for the rest of t.
func notifySocket(t *testing.T) (*net.UnixConn, string) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "notify")
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn, path
}

// readNotify returns the next datagram, failing t after 30s.
func readNotify(t *testing.T, conn *net.UnixConn) string {
	t.Helper()
	if err := conn.SetReadDeadline(time.Now().Add(30 * time.Second)); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 4096)
	n, err := conn.Read(buf)
	if err != nil {
		t.Fatalf("no sd_notify message: %v", err)
	}
	return string(buf[:n])
}

// readState returns the next datagram that sets more than STATUS, and the
// STATUS values read on the way (including its own).
func readState(t *testing.T, conn *net.UnixConn) (state string, statuses []string) {
	t.Helper()
	for {
		var rest []string
		for _, line := range strings.Split(readNotify(t, conn), "\n") {
			if v, ok := strings.CutPrefix(line, "STATUS="); ok {
				statuses = append(statuses, v)
			} else {
				rest = append(rest, line)
			}
		}
		if len(rest) > 0 {
			return strings.Join(rest, "\n"), statuses
		}
	}
}

func TestSdNotify(t *testing.T) {
	t.Setenv("NOTIFY_SOCKET", "")
	if err := sdNotify("READY=1"); err != nil {
		t.Errorf("without NOTIFY_SOCKET: %v", err)
	}
	conn, path := notifySocket(t)
	t.Setenv("NOTIFY_SOCKET", path)
	if err := sdNotify("READY=1"); err != nil {
		t.Fatal(err)
	}
	if got := readNotify(t, conn); got != "READY=1" {
		t.Errorf("got %q", got)
	}
	t.Setenv("NOTIFY_SOCKET", filepath.Join(t.TempDir(), "none"))
	if err := sdNotify("READY=1"); err == nil {
		t.Error("no error for a missing socket")
	}
}

// TestDurationFormatter: JSON log lines show durations as Go duration
// strings, of both time.Duration and the configuration's Duration.
func TestDurationFormatter(t *testing.T) {
	var buf bytes.Buffer
	log := logrus.New()
	log.SetOutput(&buf)
	log.SetFormatter(durationFormatter{&logrus.JSONFormatter{}})
	fields := logrus.Fields{"grace": 5 * time.Minute, "timeout": config.Duration(90 * time.Second), "n": 3}
	log.WithFields(fields).Warn("x")
	var got map[string]any
	if err := json.Unmarshal(buf.Bytes(), &got); err != nil {
		t.Fatal(err)
	}
	if got["grace"] != "5m0s" || got["timeout"] != "1m30s" || got["n"] != 3.0 {
		t.Errorf("got %s", buf.String())
	}
	if fields["grace"] != 5*time.Minute {
		t.Error("the entry's fields were changed")
	}
}

// TestLogLifecycle: the start line shows at every level that shows
// warnings, and not at ERROR or FATAL.
func TestLogLifecycle(t *testing.T) {
	for lvl, want := range map[logrus.Level]bool{logrus.DebugLevel: true, logrus.InfoLevel: true, logrus.WarnLevel: true,
		logrus.ErrorLevel: false, logrus.FatalLevel: false} {
		var buf bytes.Buffer
		log := logrus.New()
		log.SetOutput(&buf)
		log.SetLevel(lvl)
		logLifecycle(log, logrus.Fields{"slots": 2}, "vagent running")
		if got := strings.Contains(buf.String(), `level=info msg="vagent running" slots=2`); got != want {
			t.Errorf("level %v: %q", lvl, buf.String())
		}
	}
}

// TestRunService: `vagent run` as systemd runs it (Type=notify, stderr to
// the journal, JSON logs, level WARN): READY=1 once running, a STATUS that
// says whether it reaches the server, the start line once the server
// answered, with version, configuration file, server, arch, slots, agent
// name, poll interval, metrics address and data dir, durations as strings,
// no log file besides the journal; SIGHUP does not end it (a job after it
// is built); SIGTERM sends STOPPING=1 and exits 0.
func TestRunService(t *testing.T) {
	e := newRunEnv(t, "log_format: json\nshutdown_grace: 5m\n")
	t.Setenv("VIETER_LOG_LEVEL", "WARN")
	conn, path := notifySocket(t)
	e.env = []string{"NOTIFY_SOCKET=" + path}
	e.stderrAsJournal = true
	cmd := e.start(t)
	got, statuses := readState(t, conn)
	if got != "READY=1" || len(statuses) != 1 || !strings.HasPrefix(statuses[0], "polling http") {
		t.Fatalf("first notification %q %q, want READY=1 and a STATUS polling the server", got, statuses)
	}
	if err := cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	e.add(t, "ok")
	eventually(t, "the job after SIGHUP built", func() bool { return len(e.srv.Logs()) == 1 })
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if got, statuses = readState(t, conn); got != "STOPPING=1" || !slices.Contains(statuses, "running: polling the server") {
		t.Errorf("notification %q after %q, want STOPPING=1 after STATUS=running…", got, statuses)
	}
	if code := waitExit(t, cmd); code != 0 {
		t.Fatalf("exit %d", code)
	}
	stderr, err := os.ReadFile(e.stderrPath)
	if err != nil {
		t.Fatal(err)
	}
	var start, stopping map[string]any
	sc := bufio.NewScanner(bytes.NewReader(stderr))
	for sc.Scan() {
		var line map[string]any
		if err := json.Unmarshal(sc.Bytes(), &line); err != nil {
			t.Fatalf("not a JSON line: %q", sc.Text())
		}
		switch {
		case line["msg"] == "vagent running":
			start = line
		case strings.HasPrefix(line["msg"].(string), "stopping"):
			stopping = line
		case line["level"] == "info" && line["msg"] != "vagent stopped":
			t.Errorf("an INFO line at level WARN: %q", sc.Text())
		}
	}
	if start == nil || start["level"] != "info" || start["version"] != version || start["server"] == nil ||
		start["arch"] != "x86_64" || start["slots"] != 2.0 || start["data_dir"] != e.dir || start["config"] != e.cfg ||
		start["agent"] != config.Default().AgentName || start["poll_interval"] != "1s" || start["metrics_address"] != e.metrics {
		t.Errorf("start line %v:\n%s", start, stderr)
	}
	if stopping == nil || stopping["grace"] != "5m0s" {
		t.Errorf("stopping line %v: want grace \"5m0s\"", stopping)
	}
	if _, err := os.Stat(filepath.Join(e.dir, "vagent.log")); err == nil {
		t.Error("vagent.log written besides the journal")
	}
}

// TestSystemdUnit: the unit in contrib/systemd is what `vagent run`
// expects of systemd: Type=notify, the API key as a credential, exit
// status 78 not restarted.
func TestSystemdUnit(t *testing.T) {
	b, err := os.ReadFile("../../contrib/systemd/vagent.service")
	if err != nil {
		t.Fatal(err)
	}
	settings := map[string][]string{}
	for _, line := range strings.Split(string(b), "\n") {
		if k, v, ok := strings.Cut(line, "="); ok && !strings.HasPrefix(line, "#") {
			settings[k] = append(settings[k], v)
		}
	}
	for k, want := range map[string]string{
		"Type": "notify", "LoadCredential": "api-key:/etc/vagent/api-key", "Environment": "VIETER_API_KEY_FILE=%d/api-key",
		"RestartPreventExitStatus": "78", "KillSignal": "SIGTERM",
	} {
		if got := settings[k]; len(got) != 1 || got[0] != want {
			t.Errorf("%s=%v, want %s", k, got, want)
		}
	}
}
