//go:build unix && !linux

package flymachinestest

import "syscall"

// sysProcAttr puts the child in its own process group. There is no
// parent-death signal outside Linux: processes of a test that crashes run
// on until they end on their own.
func sysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true}
}

// waitExited cannot wait without reaping here; the caller reaps directly.
func waitExited(int) bool { return false }
