//go:build unix && !linux

package childproc

import "syscall"

// setProcAttr puts the child in its own process group, so Stop signals
// everything it runs. There is no parent-death signal outside Linux: the
// children of a parent that crashes run on until they end on their own.
func setProcAttr(attr *syscall.SysProcAttr) {
	attr.Setpgid = true
}

// waitExited cannot wait without reaping here; the caller reaps directly.
func waitExited(int) bool { return false }

// onMainThread reports false: without a parent-death signal, which thread
// forks does not matter.
func onMainThread() bool { return false }
