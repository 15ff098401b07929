package main

import (
	"errors"
	"fmt"
	"io"
	"maps"
	"net"
	"os"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/vieter-v/vagent/internal/config"
	"github.com/vieter-v/vagent/poll"
)

// What `vagent run` does for a service manager: readiness and stopping
// notifications (sd_notify), no duplicate log file under the journal,
// durations logged as strings, and a start line at the default level.

// sdNotify sends state ("READY=1", "STOPPING=1") to the service manager's
// socket named by $NOTIFY_SOCKET (systemd's Type=notify). Without the
// variable it does nothing. The protocol is one datagram on a unixgram
// socket; a name starting with '@' is in the abstract namespace.
func sdNotify(state string) error {
	name := os.Getenv("NOTIFY_SOCKET")
	if name == "" {
		return nil
	}
	if strings.HasPrefix(name, "@") {
		name = "\x00" + name[1:]
	} else if !strings.HasPrefix(name, "/") {
		return fmt.Errorf("NOTIFY_SOCKET %q: not a unix socket path", name)
	}
	conn, err := net.DialUnix("unixgram", nil, &net.UnixAddr{Name: name, Net: "unixgram"})
	if err != nil {
		return fmt.Errorf("sd_notify: %w", err)
	}
	defer conn.Close()
	if _, err := conn.Write([]byte(state)); err != nil {
		return fmt.Errorf("sd_notify: %w", err)
	}
	return nil
}

// stderrIsJournal tells whether w is the stream $JOURNAL_STREAM
// ("DEVICE:INODE") names: systemd connected stderr to the journal, which
// then has every line already.
func stderrIsJournal(w io.Writer) bool {
	v := os.Getenv("JOURNAL_STREAM")
	f, ok := w.(*os.File)
	if v == "" || !ok {
		return false
	}
	var dev, ino uint64
	if _, err := fmt.Sscanf(v, "%d:%d", &dev, &ino); err != nil {
		return false
	}
	var st syscall.Stat_t
	if err := syscall.Fstat(int(f.Fd()), &st); err != nil {
		return false
	}
	return uint64(st.Dev) == dev && uint64(st.Ino) == ino
}

// durationFormatter writes duration fields as strings ("5m0s"): JSON
// would print nanoseconds.
type durationFormatter struct{ logrus.Formatter }

func (f durationFormatter) Format(e *logrus.Entry) ([]byte, error) {
	var data logrus.Fields
	for k, v := range e.Data {
		var s string
		switch d := v.(type) {
		case time.Duration:
			s = d.String()
		case config.Duration:
			s = d.String()
		default:
			continue
		}
		if data == nil {
			data = maps.Clone(e.Data)
		}
		data[k] = s
	}
	if data == nil {
		return f.Formatter.Format(e)
	}
	c := *e
	c.Data = data
	return f.Formatter.Format(&c)
}

// logLifecycle logs a start or stop line at INFO whenever the level shows
// warnings (the default, WARN, included): an operator sees that the agent
// started, with what, without turning on every INFO line. At ERROR and
// FATAL it stays quiet.
func logLifecycle(log *logrus.Logger, fields logrus.Fields, msg string) {
	if !log.IsLevelEnabled(logrus.WarnLevel) {
		return
	}
	if log.IsLevelEnabled(logrus.InfoLevel) {
		log.WithFields(fields).Info(msg)
		return
	}
	l := &logrus.Logger{Out: log.Out, Formatter: log.Formatter, Hooks: log.Hooks, Level: logrus.InfoLevel, ExitFunc: log.ExitFunc}
	l.WithFields(fields).Info(msg)
}

// startObserver passes what the agent does on to its metrics, logs the
// start line once the server answered a poll for the first time, and
// keeps the service manager's status line (systemctl status) saying
// whether the agent reaches the server.
type startObserver struct {
	poll.Observer
	log     logrus.FieldLogger
	onFirst func()

	once   sync.Once
	mu     sync.Mutex
	status string
}

func (o *startObserver) Polled(jobs int, err error) {
	o.Observer.Polled(jobs, err)
	status := "running: polling the server"
	switch {
	case err == nil:
		o.once.Do(o.onFirst)
	case errors.Is(err, poll.ErrUnauthorized):
		status = "not polling: the server rejected the api key"
	default:
		status = "polling fails: " + poll.ErrorKind(err)
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	if status != o.status {
		o.status = status
		if err := sdNotify("STATUS=" + status); err != nil {
			o.log.WithError(err).Warn("telling the service manager")
		}
	}
}
