package flymachinestest

import (
	"syscall"
	"unsafe"
)

// sysProcAttr puts the child in its own process group, so Stop can signal
// everything it runs, and has the kernel SIGKILL it when the forking thread
// dies (see ProcessRunner.forker for why that is the right thread).
func sysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
}

// waitExited blocks until process pid has exited, without reaping it
// (waitid with WNOWAIT): the pid stays a zombie, and cannot be reused,
// until cmd.Wait reaps it. It reports whether it waited; on an unexpected
// error it returns false and the caller reaps directly.
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
