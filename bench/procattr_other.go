//go:build !linux

package bench

import "syscall"

// childAttr gives a child process its own process group.
func childAttr() *syscall.SysProcAttr { return &syscall.SysProcAttr{Setpgid: true} }
