package job

import (
	"os"
	"path/filepath"
	"testing"
)

// TestRunDirsOfLiveProcessesKept: a Runner starting beside another on the
// same directory (an agent and `vagent build` on one data dir) removes the
// run directories dead processes left, not those of runs in progress.
func TestRunDirsOfLiveProcessesKept(t *testing.T) {
	dir := t.TempDir()
	live := &Runner{opts: defaultOptions(), dir: dir}
	if err := live.prepareDir(); err != nil {
		t.Fatal(err)
	}
	run, err := live.newRun(nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer run.remove()
	private, err := live.privateCache()
	if err != nil {
		t.Fatal(err)
	}
	defer private.release()
	cache := private.tree
	// What a killed process left: no one holds a lock on it.
	dead := filepath.Join(live.runsDir(), "run-dead")
	if err := os.MkdirAll(filepath.Join(dead, "repos.d"), 0o755); err != nil {
		t.Fatal(err)
	}

	second := &Runner{opts: defaultOptions(), dir: dir}
	if err := second.prepareDir(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(dead); !os.IsNotExist(err) {
		t.Errorf("the dead process's run %s is still there: %v", dead, err)
	}
	for _, p := range []string{filepath.Join(run.dir, "build.sh"), filepath.Join(run.dir, "srcinfo"), cache} {
		if _, err := os.Lstat(p); err != nil {
			t.Errorf("a live run's %s was removed: %v", p, err)
		}
	}
	run.remove()
	if _, err := os.Stat(run.dir); !os.IsNotExist(err) {
		t.Errorf("run dir %s left after remove: %v", run.dir, err)
	}
}
