package sandbox_test

import (
	"strings"
	"testing"

	"github.com/vieter-v/vagent/sandbox/sandboxtest"
)

func TestIsolatedSmoke(t *testing.T) {
	e := newManager(t)
	rootfs := sandboxtest.BusyboxRootfs(t)
	res, out := sh(t, e.m, rootfs, `ip addr; ip rule; ip -6 rule; ip route; cat /etc/resolv.conf; ip rule del pref 200 2>&1; echo end`)
	t.Logf("%+v\n%s", res, out)
	if !strings.Contains(out, "end") {
		t.Fatal(out)
	}
}
