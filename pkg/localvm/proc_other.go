//go:build unix && !linux

package localvm

import "syscall"

// sysProcAttr puts the child in its own process group. There is no
// parent-death signal outside Linux: a controller that crashes leaves its
// children running until they end on their own (deadline, or their next
// heartbeat answered 409 once the reconciler has failed the session).
func sysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true}
}

// waitExited cannot wait without reaping here; the caller reaps directly.
func waitExited(pid int) bool { return false }
