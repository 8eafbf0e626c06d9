package bench

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"time"
)

// Machine describes the host, from /proc.
type Machine struct {
	CPUModel string
	Cores    int
	MemTotal int64 // bytes
	Kernel   string
	Go       string
}

// ReadMachine reads the host's CPU model, core count and memory.
func ReadMachine() Machine {
	m := Machine{Cores: runtime.NumCPU(), Go: runtime.Version(), CPUModel: "unknown"}
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for line := range strings.SplitSeq(string(b), "\n") {
			if k, v, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(k) == "model name" {
				m.CPUModel = strings.TrimSpace(v)
				break
			}
		}
	}
	if kb, err := meminfo("MemTotal"); err == nil {
		m.MemTotal = kb * 1024
	}
	if b, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		m.Kernel = strings.TrimSpace(string(b))
	}
	return m
}

func meminfo(key string) (int64, error) {
	b, err := os.ReadFile("/proc/meminfo")
	if err != nil {
		return 0, err
	}
	return statusField(b, key)
}

// statusField reads "Key:   123 kB" from a /proc status-like file, in kB.
func statusField(b []byte, key string) (int64, error) {
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), ":")
		if !ok || k != key {
			continue
		}
		f := strings.Fields(v)
		if len(f) == 0 {
			break
		}
		return strconv.ParseInt(f[0], 10, 64)
	}
	return 0, fmt.Errorf("%s not found", key)
}

// RSS returns a process's resident set (VmRSS) and its peak (VmHWM), in
// bytes.
func RSS(pid int) (rss, peak int64, err error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, 0, err
	}
	rss, err = statusField(b, "VmRSS")
	if err != nil {
		return 0, 0, err
	}
	peak, err = statusField(b, "VmHWM")
	if err != nil {
		return 0, 0, err
	}
	return rss * 1024, peak * 1024, nil
}

// clockTick is USER_HZ, the unit of /proc/<pid>/stat times; 100 on every
// Linux architecture Go supports.
const clockTick = 100

// CPUTime returns the user plus system CPU time a process has used.
func CPUTime(pid int) (time.Duration, error) {
	st, err := readStat(pid)
	if err != nil {
		return 0, err
	}
	return st.cpu, nil
}

// procStat is what is read from /proc/<pid>/stat.
type procStat struct {
	ppid int
	// cpu is utime + stime; children is cutime + cstime (of the children
	// the process has waited for).
	cpu, children time.Duration
}

func readStat(pid int) (procStat, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return procStat{}, err
	}
	// The command name may hold spaces and parentheses: fields start
	// after the last ')'.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return procStat{}, fmt.Errorf("malformed /proc/%d/stat", pid)
	}
	f := strings.Fields(string(b[i+1:]))
	// f[0] is field 3 (state), f[1] field 4 (ppid); utime, stime, cutime
	// and cstime are fields 14 to 17.
	if len(f) < 15 {
		return procStat{}, fmt.Errorf("short /proc/%d/stat", pid)
	}
	var n [5]int64
	for k, j := range []int{1, 11, 12, 13, 14} {
		if n[k], err = strconv.ParseInt(f[j], 10, 64); err != nil {
			return procStat{}, fmt.Errorf("malformed /proc/%d/stat: %w", pid, err)
		}
	}
	tick := func(v int64) time.Duration { return time.Duration(v) * time.Second / clockTick }
	return procStat{ppid: int(n[0]), cpu: tick(n[1] + n[2]), children: tick(n[3] + n[4])}, nil
}

// TreeCPUTime returns the CPU time used by a process and its children:
// its own utime + stime, those of its live children, and the cutime +
// cstime of the children it has reaped. For the PostgreSQL postmaster it
// is the cluster's CPU: every backend and background worker, including
// the connections that closed meanwhile.
func TreeCPUTime(pid int) (time.Duration, error) {
	root, err := readStat(pid)
	if err != nil {
		return 0, err
	}
	total := root.cpu + root.children
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return 0, err
	}
	for _, e := range entries {
		child, err := strconv.Atoi(e.Name())
		if err != nil || child == pid {
			continue
		}
		st, err := readStat(child)
		if err != nil || st.ppid != pid {
			continue // gone meanwhile, or not a child
		}
		total += st.cpu
	}
	return total, nil
}

// ParentPID returns a process's parent.
func ParentPID(pid int) (int, error) {
	st, err := readStat(pid)
	return st.ppid, err
}

// ProcessesOf returns the pids of live processes running the executable
// exe (an absolute path).
func ProcessesOf(exe string) []int {
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return nil
	}
	var pids []int
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		got, err := os.Readlink(filepath.Join("/proc", e.Name(), "exe"))
		if err != nil || got != exe {
			continue
		}
		if st, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid)); err == nil {
			if i := bytes.LastIndexByte(st, ')'); i > 0 && len(st) > i+2 && st[i+2] == 'Z' {
				continue // a zombie: exited, not yet reaped
			}
		}
		pids = append(pids, pid)
	}
	return pids
}

// mib formats bytes in MiB.
func mib(b int64) float64 { return float64(b) / (1 << 20) }
