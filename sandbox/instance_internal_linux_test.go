package sandbox

import (
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestPeersRootlessAndRoot: a root Manager and a rootless one (root of a
// user namespace) refuse each other on one data directory, whatever their
// id ranges say (a rootless owner's are namespace ids); rootless peers,
// which all map the user's subordinate ids, accept each other.
func TestPeersRootlessAndRoot(t *testing.T) {
	for _, tc := range []struct {
		name           string
		self, peer     bool // rootless
		peerBase, base uint32
		refused        string
	}{
		{"root beside rootless", false, true, 1, 1, "an ordinary user's (rootless)"},
		{"rootless beside root", true, false, 300000, 1, "root's"},
		{"rootless beside rootless", true, true, 1, 1, ""},
		{"root beside root", false, false, 300000, 300000, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			peer := filepath.Join(dir, instancesDir, "peer")
			if err := os.MkdirAll(peer, 0o700); err != nil {
				t.Fatal(err)
			}
			b, _ := json.Marshal(ownerInfo{PID: os.Getpid() + 1, IDBase: tc.peerBase, IDSize: 65536, Rootless: tc.peer})
			if err := os.WriteFile(filepath.Join(peer, ownerFile), b, 0o644); err != nil {
				t.Fatal(err)
			}
			m := &Manager{dataDir: dir, instDir: filepath.Join(dir, instancesDir, "self"), rootless: tc.self, rootUID: tc.base, rootGID: tc.base, idSize: 65536}
			err := m.checkPeers()
			switch {
			case tc.refused == "" && err != nil:
				t.Errorf("checkPeers: %v, want nil", err)
			case tc.refused != "" && (!errors.Is(err, ErrIDRangeInUse) || !strings.Contains(err.Error(), tc.refused)):
				t.Errorf("checkPeers: %v, want ErrIDRangeInUse naming the peer %s", err, tc.refused)
			}
		})
	}
}
