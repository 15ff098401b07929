package sandbox

import (
	"fmt"
	"strings"
)

// Rootless mode: an ordinary user's agent.
//
// An agent started by a user who is not root first becomes root of a user
// namespace of its own (EnterUserNamespace): namespace id 0 is the user,
// ids 1..N are the user's subordinate ids from /etc/subuid and
// /etc/subgid, mapped by the setuid helpers newuidmap and newgidmap. Inside
// it the agent mounts overlays (Linux ≥ 5.11), unpacks images with their
// owners and starts containers whose own user namespace maps container ids
// 0-65535 to namespace ids 1-65536: container root is a subordinate id,
// never the user. What the host must allow for that is checked before
// the agent enters the namespace (rootlessFacts), and `vagent check`
// reports it with the command that fixes each missing piece.

// RootlessIDs is the size of the id range a rootless agent needs: container
// ids 0-65535 (nobody is 65534) map to its subordinate ids.
const RootlessIDs = 65536

// rootlessFacts is what rootless mode needs from the host, probed in the
// user's own process (files and sysctls; the probe functions read them).
type rootlessFacts struct {
	user     string // the user's name ("" unknown)
	uid, gid uint32
	subuid   SubIDs
	subgid   SubIDs
	subErr   error   // reading /etc/subuid or /etc/subgid
	free     IDRange // a block no subuid/subgid entry uses, for the fix
	// newuidmap and newgidmap: their paths ("" not found) and whether
	// they can write maps (setuid root or a file capability).
	newuidmap, newgidmap     string
	newuidmapOK, newgidmapOK bool
	unprivClone              string // kernel.unprivileged_userns_clone ("" no such sysctl)
	maxUserNS                string // user.max_user_namespaces
	apparmorRestrict         string // kernel.apparmor_restrict_unprivileged_userns ("" none)
	userns                   error  // creating a user namespace as the user
	binary                   string // the agent's binary, for the AppArmor fix
}

// usernsFix is the sysctl that enables unprivileged user namespaces
// again, when one disables them.
func (f rootlessFacts) usernsFix() string {
	switch {
	case f.unprivClone == "0":
		return "unprivileged user namespaces are disabled (kernel.unprivileged_userns_clone=0): " +
			"sudo sysctl -w kernel.unprivileged_userns_clone=1 " +
			"(and echo kernel.unprivileged_userns_clone=1 | sudo tee /etc/sysctl.d/50-vagent.conf to keep it)"
	case f.maxUserNS == "0":
		return "user namespaces are disabled (user.max_user_namespaces=0): sudo sysctl -w user.max_user_namespaces=15000 " +
			"(and echo user.max_user_namespaces=15000 | sudo tee /etc/sysctl.d/50-vagent.conf to keep it)"
	case f.apparmorRestrict == "1":
		bin := f.binary
		if bin == "" {
			bin = "/usr/local/bin/vagent"
		}
		return "AppArmor restricts unprivileged user namespaces (kernel.apparmor_restrict_unprivileged_userns=1): " +
			"allow them to vagent with a profile: printf 'abi <abi/4.0>,\\ninclude <tunables/global>\\nprofile vagent " + bin +
			" flags=(unconfined) {\\n  userns,\\n}\\n' | sudo tee /etc/apparmor.d/vagent && sudo apparmor_parser -r /etc/apparmor.d/vagent"
	}
	return ""
}

// evaluateRootless turns rootless facts into requirements: subordinate
// ids, newuidmap/newgidmap, user namespaces. Each missing one says the
// command that fixes it.
func evaluateRootless(f rootlessFacts) []Requirement {
	var reqs []Requirement
	add := func(name string, ok bool, format string, args ...any) {
		reqs = append(reqs, Requirement{Name: name, OK: ok, Detail: fmt.Sprintf(format, args...)})
	}
	who := f.user
	if who == "" {
		who = fmt.Sprint(f.uid)
	}
	fix := func() string {
		r := f.free
		if !r.Valid() {
			r = IDRange{Base: 100000, Size: RootlessIDs}
		}
		return fmt.Sprintf("sudo usermod --add-subuids %d-%d --add-subgids %d-%d %s", r.Base, r.Last(), r.Base, r.Last(), who)
	}
	switch {
	case f.subErr != nil:
		add("subordinate ids", false, "%v", f.subErr)
	case len(f.subuid) == 0 && len(f.subgid) == 0:
		add("subordinate ids", false, "user %s has no entry in /etc/subuid and /etc/subgid: %s", who, fix())
	case len(f.subuid) == 0:
		add("subordinate ids", false, "user %s has no entry in /etc/subuid: %s", who, fix())
	case len(f.subgid) == 0:
		add("subordinate ids", false, "user %s has no entry in /etc/subgid: %s", who, fix())
	case f.subuid.Total() < RootlessIDs || f.subgid.Total() < RootlessIDs:
		add("subordinate ids", false, "user %s has %d subordinate uids and %d gids, builds need %d (container ids 0-65535): %s",
			who, f.subuid.Total(), f.subgid.Total(), RootlessIDs, fix())
	default:
		add("subordinate ids", true, "uids %s, gids %s (/etc/subuid, /etc/subgid)", f.subuid, f.subgid)
	}

	missingTool := func(name, path string, ok bool) {
		switch {
		case path == "":
			add(name, false, "%s not found: sudo apt-get install uidmap (Fedora, Arch: shadow-utils, shadow)", name)
		case !ok:
			add(name, false, "%s is neither setuid root nor has cap_setuid/cap_setgid: sudo chmod u+s %s (or reinstall uidmap)", path, path)
		default:
			add(name, true, "%s", path)
		}
	}
	missingTool("newuidmap", f.newuidmap, f.newuidmapOK)
	missingTool("newgidmap", f.newgidmap, f.newgidmapOK)

	switch fix := f.usernsFix(); {
	case fix != "":
		add("user namespaces", false, "%s", fix)
	case f.userns != nil:
		add("user namespaces", false, "cannot create a user namespace as uid %d: %v", f.uid, f.userns)
	default:
		add("user namespaces", true, "unprivileged user namespaces are allowed")
	}
	return reqs
}

// RootlessError reports that this process cannot become root of its own
// user namespace: the rootless requirements that are missing, each with
// its fix.
type RootlessError struct {
	Missing []Requirement
	// Err is a failure of the attempt itself (newuidmap refusing the
	// map), when no requirement explains it.
	Err error
}

func (e *RootlessError) Error() string {
	var b strings.Builder
	b.WriteString("rootless mode is not available")
	for _, r := range e.Missing {
		fmt.Fprintf(&b, "\n  %s: %s", r.Name, r.Detail)
	}
	if e.Err != nil {
		fmt.Fprintf(&b, ": %v", e.Err)
	}
	return b.String()
}

func (e *RootlessError) Unwrap() error { return ErrRootless }
