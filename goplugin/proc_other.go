//go:build !linux

package goplugin

import (
	"os"
	"os/exec"
)

// runFile leaves cmd running the plugin by path: outside Linux there is
// no portable way to execute an open file, so a file swapped in at the
// path between Load's sha256 check and the start of the process would
// run (as before; on Linux the hashed file itself runs).
func runFile(cmd *exec.Cmd, f *os.File, pinned bool) error { return nil }

// ownGroup and endGroup are Linux only: elsewhere the plugin shares the
// host's process group, and processes it starts may outlive it.
func ownGroup(*exec.Cmd)            {}
func endGroup(int, <-chan struct{}) {}
