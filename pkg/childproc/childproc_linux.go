package childproc

import (
	"syscall"
	"unsafe"
)

// setProcAttr puts the child in its own process group, so Stop signals
// everything it runs, and has the kernel SIGKILL it when the forking
// thread ends (see Forker for why that thread is the right one).
func setProcAttr(attr *syscall.SysProcAttr) {
	attr.Setpgid = true
	attr.Pdeathsig = syscall.SIGKILL
}

// waitExited blocks until process pid has exited, without reaping it
// (waitid with WNOWAIT): the pid stays a zombie, and cannot be reused,
// until exec.Cmd.Wait reaps it. It reports whether it waited; on an
// unexpected error it returns false and the caller reaps directly.
func waitExited(pid int) bool {
	const (
		pPID    = 1          // P_PID
		wNOWAIT = 0x01000000 // WNOWAIT
	)
	var info [128]byte // siginfo_t
	for {
		_, _, errno := syscall.Syscall6(syscall.SYS_WAITID, pPID, uintptr(pid),
			uintptr(unsafe.Pointer(&info[0])), syscall.WEXITED|wNOWAIT, 0, 0)
		switch errno {
		case 0:
			return true
		case syscall.EINTR:
			continue
		default:
			return false
		}
	}
}

// onMainThread reports whether the calling goroutine runs on the process's
// main thread.
func onMainThread() bool { return syscall.Gettid() == syscall.Getpid() }
