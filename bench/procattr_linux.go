package bench

import "syscall"

// childAttr makes a child process die with the harness (the kernel sends
// SIGKILL when the forking thread ends) and gives it its own process group.
func childAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL, Setpgid: true}
}
