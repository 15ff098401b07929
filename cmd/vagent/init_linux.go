package main

import "github.com/vieter-v/vagent/sandbox"

// The libcontainer init re-exec hook: when this binary is started as a
// container's init (os.Args[1] == "init") or as the sandbox's user
// namespace helper, sandbox.Init does that job and never returns. It must
// run before main, and before testscript's command dispatch in tests.
func init() { sandbox.Init() }
