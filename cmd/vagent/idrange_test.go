package main

import (
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/sirupsen/logrus"

	"github.com/vieter-v/vagent/sandbox"
)

// fakeHost points hostIDs at files of a Debian VM whose first user holds
// 100000:65536 in /etc/subuid and /etc/subgid (the old default id_range)
// and returns a function that adds a line to one of them.
func fakeHost(t *testing.T) (add func(file, line string)) {
	t.Helper()
	dir := t.TempDir()
	h := sandbox.HostIDs{}
	files := map[string]*string{"passwd": &h.Passwd, "group": &h.Group, "subuid": &h.Subuid, "subgid": &h.Subgid, "login.defs": &h.LoginDefs}
	content := map[string]string{
		"passwd": "root:x:0:0:root:/root:/bin/bash\nadmin:x:1000:1000::/home/admin:/bin/bash\n",
		"group":  "root:x:0:\nadmin:x:1000:\n",
		"subuid": "admin:100000:65536\n", "subgid": "admin:100000:65536\n",
		"login.defs": "SUB_UID_MAX 600100000\nSUB_GID_MAX 600100000\n",
	}
	for name, p := range files {
		*p = filepath.Join(dir, name)
		if err := os.WriteFile(*p, []byte(content[name]), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	saved := hostIDs
	hostIDs = h
	t.Cleanup(func() { hostIDs = saved })
	return func(file, line string) {
		f, err := os.OpenFile(filepath.Join(dir, file), os.O_APPEND|os.O_WRONLY, 0)
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		if _, err := f.WriteString(line + "\n"); err != nil {
			t.Fatal(err)
		}
	}
}

func quietLog() *logrus.Logger {
	l := logrus.New()
	l.SetOutput(&strings.Builder{})
	return l
}

// TestIDRangeDefault: without id_range.base a data dir gets a free range
// (not the 100000 the host's first user holds), recorded in the data dir
// and the same for every later process; `vagent check` (record false)
// names the range a build would pick and writes nothing.
func TestIDRangeDefault(t *testing.T) {
	fakeHost(t)
	dir := filepath.Join(t.TempDir(), "data")
	cfg := defaultConfig()
	peek, err := resolveIDRange(dir, &cfg, false, quietLog())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(dir); !os.IsNotExist(err) {
		t.Errorf("resolving without recording created %s: %v", dir, err)
	}
	first, err := resolveIDRange(dir, &cfg, true, quietLog())
	if err != nil {
		t.Fatal(err)
	}
	if first.IDRange != peek.IDRange {
		t.Errorf("check said %v, the first build picked %v", peek.IDRange, first.IDRange)
	}
	if first.Base < 524288 || first.Size != 65536 || len(hostIDs.Conflicts(first.IDRange)) > 0 {
		t.Errorf("picked %v: not a free block of the container range", first.IDRange)
	}
	if !strings.Contains(first.How, "picked") {
		t.Errorf("how = %q", first.How)
	}
	rec, err := readIDRange(filepath.Join(dir, idRangeFile))
	if err != nil || rec.IDRange != first.IDRange || !rec.Picked {
		t.Errorf("record %+v %v, want %v picked", rec, err, first.IDRange)
	}
	// A restart (or `vagent build` on the same data dir) gets the same.
	again, err := resolveIDRange(dir, nil, true, quietLog())
	if err != nil || again.IDRange != first.IDRange || !strings.Contains(again.How, "recorded in") {
		t.Errorf("second process: %+v %v, want %v recorded", again, err, first.IDRange)
	}
}

// TestIDRangeConfigured: id_range.base wins, is checked against the host
// (refused unless allow_conflicts) and becomes the data dir's range, which
// processes without a configuration then use.
func TestIDRangeConfigured(t *testing.T) {
	fakeHost(t)
	dir := filepath.Join(t.TempDir(), "data")
	if _, err := resolveIDRange(dir, nil, true, quietLog()); err != nil {
		t.Fatal(err)
	}
	cfg := defaultConfig()
	cfg.IDRange.Base = 100000
	_, err := resolveIDRange(dir, &cfg, true, quietLog())
	var ee *exitError
	if !errors.As(err, &ee) || ee.code != exitConfig || !strings.Contains(err.Error(), "subuid admin:100000:65536") {
		t.Fatalf("the first user's range: %v, want a configuration error naming the subuid entry", err)
	}
	cfg.IDRange.AllowConflicts = true
	c, err := resolveIDRange(dir, &cfg, true, quietLog())
	if err != nil || c.Base != 100000 || len(c.Conflicts) != 2 || c.How != "configured (id_range)" {
		t.Fatalf("allowed conflicts: %+v %v", c, err)
	}
	cfg.IDRange = IDRange{Base: 300000, Size: 65536}
	if c, err = resolveIDRange(dir, &cfg, true, quietLog()); err != nil || c.Base != 300000 {
		t.Fatalf("a free configured range: %+v %v", c, err)
	}
	if c, err := resolveIDRange(dir, nil, true, quietLog()); err != nil || c.Base != 300000 {
		t.Errorf("a process without configuration beside it: %+v %v, want the configured 300000", c, err)
	}
}

// TestIDRangeNowInUse: when host ids in use come to overlap the data dir's
// range (a user added since), the next process picks a free one.
func TestIDRangeNowInUse(t *testing.T) {
	add := fakeHost(t)
	dir := filepath.Join(t.TempDir(), "data")
	first, err := resolveIDRange(dir, nil, true, quietLog())
	if err != nil {
		t.Fatal(err)
	}
	add("subuid", "latecomer:"+strconv.FormatUint(uint64(first.Base), 10)+":65536")
	var log strings.Builder
	l := logrus.New()
	l.SetOutput(&log)
	second, err := resolveIDRange(dir, nil, true, l)
	if err != nil {
		t.Fatal(err)
	}
	if second.IDRange == first.IDRange || len(hostIDs.Conflicts(second.IDRange)) > 0 {
		t.Errorf("after a user took %v: %v", first.IDRange, second.IDRange)
	}
	if !strings.Contains(log.String(), "latecomer") {
		t.Errorf("the log does not say why the range changed:\n%s", log.String())
	}
}
