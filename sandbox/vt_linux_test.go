package sandbox_test

import (
	"os"
	"slices"
	"testing"
	"time"

	"github.com/sirupsen/logrus"
	"github.com/vieter-v/vagent/sandbox/sandboxtest"
)

func TestVT(t *testing.T) {
	if os.Getenv("VT") == "" {
		t.Skip()
	}
	e := newManager(t)
	rootfs := sandboxtest.BusyboxRootfs(t)
	var ds []time.Duration
	for i := range 30 {
		if i == 29 && os.Getenv("VTD") != "" {
			logrus.SetLevel(logrus.DebugLevel)
			logrus.SetFormatter(&logrus.TextFormatter{FullTimestamp: true, TimestampFormat: "05.000000"})
		}
		s := time.Now()
		sh(t, e.m, rootfs, "true")
		ds = append(ds, time.Since(s))
	}
	slices.Sort(ds)
	t.Logf("median %v", ds[len(ds)/2])
}
