//go:build unix

package childproc

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// recorder collects the lines of a slog.JSONHandler, which writes one
// line a Write.
type recorder struct {
	mu    sync.Mutex
	lines []map[string]any
}

func (r *recorder) Write(b []byte) (int, error) {
	var line map[string]any
	if err := json.Unmarshal(b, &line); err != nil {
		return 0, err
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.lines = append(r.lines, line)
	return len(b), nil
}

// all returns the lines logged so far.
func (r *recorder) all() []map[string]any {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.lines)
}

// find returns the first line logged with msg, or nil.
func (r *recorder) find(msg string) map[string]any {
	for _, line := range r.all() {
		if line["msg"] == msg {
			return line
		}
	}
	return nil
}

// awaitOutput waits until the child wrote out (forwarded with msg
// DefaultOutputMsg).
func (r *recorder) awaitOutput(t *testing.T, out string) {
	t.Helper()
	for start := time.Now(); ; time.Sleep(10 * time.Millisecond) {
		for _, line := range r.all() {
			if line["line"] == out {
				return
			}
		}
		if time.Since(start) > 10*time.Second {
			t.Fatalf("the child did not write %q: %v", out, r.all())
		}
	}
}

// newForker returns a Forker closed when the test ends, and a logger whose
// lines the recorder collects.
func newForker(t *testing.T) (*Forker, *slog.Logger, *recorder) {
	t.Helper()
	f := New()
	t.Cleanup(f.Close)
	logs := &recorder{}
	return f, slog.New(slog.NewJSONHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug})), logs
}

// script writes an executable shell script and returns its path.
func script(t *testing.T, body string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "child")
	if err := os.WriteFile(path, []byte("#!/bin/sh\n"+body), 0o755); err != nil {
		t.Fatal(err)
	}
	return path
}

// closeWithin closes f and fails the test unless Close returns within d:
// unless every process f started, and all they spawned, exited (Close
// waits for the output pipes, which they all hold, to close).
func closeWithin(t *testing.T, f *Forker, d time.Duration) {
	t.Helper()
	closed := make(chan struct{})
	go func() {
		defer close(closed)
		f.Close()
	}()
	select {
	case <-closed:
	case <-time.After(d):
		t.Fatalf("Close still waits after %v: a process of the group survived", d)
	}
}

func TestStartStopReap(t *testing.T) {
	f, log, logs := newForker(t)
	var exits []Exit
	var mu sync.Mutex
	cmd := exec.Command(script(t, "echo started\nexec sleep 300\n"))
	cmd.Env = []string{"PATH=" + os.Getenv("PATH")}
	p, err := f.Start(t.Context(), cmd, Options{Log: log.With("who", "sleeper"), OnExit: func(e Exit) {
		mu.Lock()
		defer mu.Unlock()
		exits = append(exits, e)
	}})
	if err != nil {
		t.Fatalf("Start: %v", err)
	}
	pid := p.Pid()
	if pgid, err := syscall.Getpgid(pid); err != nil || pgid != pid {
		t.Errorf("pgid of %d = %d (%v), want its own group", pid, pgid, err)
	}
	if p.Exited() {
		t.Error("Exited() of a running process = true")
	}
	logs.awaitOutput(t, "started")
	select {
	case <-p.Done():
		t.Fatal("Done closed while the process runs")
	default:
	}

	start := time.Now()
	if err := p.Stop(t.Context(), 10*time.Second); err != nil {
		t.Fatalf("Stop: %v", err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("Stop took %v: SIGTERM did not end sleep", d)
	}
	// Stop returned: OnExit ran, once, and the pid is reaped.
	mu.Lock()
	got := append([]Exit(nil), exits...)
	mu.Unlock()
	if len(got) != 1 {
		t.Fatalf("OnExit called %d times before Stop returned, want 1", len(got))
	}
	e := p.Wait()
	if e.Pid != pid || !e.Stopped || e.Code != 128+int(syscall.SIGTERM) || e.State == nil || e.Err != nil {
		t.Errorf("Exit = %+v, want pid %d stopped by SIGTERM (143)", e, pid)
	}
	if got[0] != e {
		t.Errorf("OnExit got %+v, Wait %+v", got[0], e)
	}
	if err := syscall.Kill(pid, 0); !errors.Is(err, syscall.ESRCH) {
		t.Errorf("kill(%d, 0) after Stop = %v, want ESRCH (reaped)", pid, err)
	}
	if !p.Exited() {
		t.Error("Exited() after Stop = false")
	}
	// A second Stop of a reaped process only returns.
	if err := p.Stop(t.Context(), time.Second); err != nil {
		t.Errorf("second Stop: %v", err)
	}
	attrs := e.Attrs()
	if len(attrs) != 6 || attrs[0] != "pid" || attrs[2] != "exit_code" || attrs[3] != 143 || attrs[4] != "exit" {
		t.Errorf("Attrs = %v", attrs)
	}

	if line := logs.find(DefaultOutputMsg); line["line"] != "started" || line["who"] != "sleeper" ||
		line["stream"] != "stdout" || line["level"] != "INFO" {
		t.Errorf("forwarded line = %v", line)
	}
}

func TestExitOnItsOwn(t *testing.T) {
	f, _, _ := newForker(t)
	p, err := f.Start(t.Context(), exec.Command("/bin/sh", "-c", "exit 3"), Options{})
	if err != nil {
		t.Fatal(err)
	}
	e := p.Wait()
	if e.Stopped || e.Code != 3 || e.State == nil || e.State.ExitCode() != 3 {
		t.Errorf("Exit = %+v, want code 3, not stopped", e)
	}
	if err := syscall.Kill(e.Pid, 0); !errors.Is(err, syscall.ESRCH) {
		t.Errorf("kill(%d, 0) = %v, want ESRCH (reaped)", e.Pid, err)
	}
	// Stopping an exited process sends nothing and returns at once.
	start := time.Now()
	if err := p.Stop(t.Context(), time.Hour); err != nil {
		t.Errorf("Stop of an exited process: %v", err)
	}
	if d := time.Since(start); d > time.Second {
		t.Errorf("Stop of an exited process took %v", d)
	}
}

// stubborn is a script that ignores SIGTERM, as does the sleep it starts
// in its process group.
const stubborn = "trap '' TERM\nsleep 300 &\necho started\nwait\nwhile :; do sleep 1; done\n"

func TestStopTimeoutKillsGroup(t *testing.T) {
	f, log, logs := newForker(t)
	p, err := f.Start(t.Context(), exec.Command(script(t, stubborn)), Options{Log: log})
	if err != nil {
		t.Fatal(err)
	}
	logs.awaitOutput(t, "started") // its sleep runs
	start := time.Now()
	if err := p.Stop(t.Context(), 300*time.Millisecond); err != nil {
		t.Fatalf("Stop: %v", err)
	}
	if d := time.Since(start); d < 300*time.Millisecond || d > 5*time.Second {
		t.Errorf("Stop took %v, want the timeout (300ms) then SIGKILL", d)
	}
	if e := p.Wait(); !e.Stopped || e.Code != 128+int(syscall.SIGKILL) {
		t.Errorf("Exit = %+v, want stopped by SIGKILL (137)", e)
	}
	// The sleep, which ignores SIGTERM too, holds the output pipes: Close
	// returns once it died with its group.
	closeWithin(t, f, 10*time.Second)
	if line := logs.find("process did not stop in time; killing it"); line == nil || line["level"] != "WARN" ||
		line["pid"] != float64(p.Pid()) || line["stop_timeout"] != "300ms" {
		t.Errorf("escalation logged as %v", line)
	}
}

func TestStopContextEnds(t *testing.T) {
	f, log, logs := newForker(t)
	p, err := f.Start(t.Context(), exec.Command(script(t, stubborn)), Options{Log: log})
	if err != nil {
		t.Fatal(err)
	}
	logs.awaitOutput(t, "started")
	ctx, cancel := context.WithTimeout(t.Context(), 200*time.Millisecond)
	defer cancel()
	// Stop returns when ctx ends, not after the hour. It answers the
	// context's error, or nil when the SIGKILLed process happened to be
	// reaped before it looked (on a busy machine the reaper can win that
	// race: both are correct, as documented).
	if err := p.Stop(ctx, time.Hour); err != nil && !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Stop = %v, want the context's error or nil", err)
	}
	// The group was SIGKILLed all the same.
	if e := p.Wait(); e.Code != 128+int(syscall.SIGKILL) {
		t.Errorf("Exit = %+v, want killed (137)", e)
	}
	closeWithin(t, f, 10*time.Second)
}

func TestForwardLines(t *testing.T) {
	f, log, logs := newForker(t)
	long := strings.Repeat("x", maxLine+100)
	out := filepath.Join(t.TempDir(), "out")
	content := "plain\r\n" + `{"level":"WARN","msg":"w"}` + "\n\n" + `{"level":"DEBUG","msg":"d"}` + "\n" + long + "\nlast without newline"
	if err := os.WriteFile(out, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("/bin/sh", "-c", `cat "$1"; echo '{"level":"ERROR","msg":"e"}' >&2`, "sh", out)
	p, err := f.Start(t.Context(), cmd, Options{Log: log, OutputMsg: "vm output"})
	if err != nil {
		t.Fatal(err)
	}
	p.Wait()
	f.Close() // waits for the forwarders to reach the end of the output

	type fwd struct{ stream, level, line string }
	var got []fwd
	for _, line := range logs.all() {
		if line["msg"] != "vm output" {
			t.Errorf("unexpected log line %v", line)
			continue
		}
		got = append(got, fwd{line["stream"].(string), line["level"].(string), line["line"].(string)})
	}
	want := []fwd{
		{"stdout", "INFO", "plain"},
		{"stdout", "WARN", `{"level":"WARN","msg":"w"}`},
		{"stdout", "DEBUG", `{"level":"DEBUG","msg":"d"}`},
		{"stdout", "INFO", long[:maxLine]},
		{"stdout", "INFO", long[maxLine:]},
		{"stdout", "INFO", "last without newline"},
		{"stderr", "ERROR", `{"level":"ERROR","msg":"e"}`},
	}
	// The streams interleave in any order; each keeps its own.
	var stdout, stderr []fwd
	for _, g := range got {
		if g.stream == "stdout" {
			stdout = append(stdout, g)
		} else {
			stderr = append(stderr, g)
		}
	}
	if len(stdout) != 6 || len(stderr) != 1 {
		t.Fatalf("forwarded %d stdout and %d stderr lines, want 6 and 1: %v", len(stdout), len(stderr), got)
	}
	for i, w := range want[:6] {
		if stdout[i] != w {
			t.Errorf("stdout line %d = %.80v, want %.80v", i, stdout[i], w)
		}
	}
	if stderr[0] != want[6] {
		t.Errorf("stderr line = %v, want %v", stderr[0], want[6])
	}
}

func TestLevelOf(t *testing.T) {
	for line, want := range map[string]slog.Level{
		`{"level":"ERROR","msg":"x"}`: slog.LevelError,
		`{"level":"WARN","msg":"x"}`:  slog.LevelWarn,
		`{"level":"INFO","msg":"x"}`:  slog.LevelInfo,
		`{"level":"DEBUG+2"}`:         slog.LevelDebug + 2,
		`{"msg":"x"}`:                 slog.LevelInfo,
		`{"level":"LOUD"}`:            slog.LevelInfo,
		`plain text`:                  slog.LevelInfo,
		`{broken`:                     slog.LevelInfo,
		``:                            slog.LevelInfo,
	} {
		if got := levelOf([]byte(line)); got != want {
			t.Errorf("levelOf(%s) = %v, want %v", line, got, want)
		}
	}
}

func TestStartErrors(t *testing.T) {
	f, _, _ := newForker(t)
	if _, err := f.Start(t.Context(), exec.Command(filepath.Join(t.TempDir(), "missing")), Options{}); err == nil {
		t.Error("Start of a missing binary succeeded")
	}
	cmd := exec.Command("/bin/true")
	cmd.Stdout = os.Stdout
	if _, err := f.Start(t.Context(), cmd, Options{}); err == nil {
		t.Error("Start with cmd.Stdout set succeeded")
	}
	f.Close()
	f.Close() // twice is fine
	if _, err := f.Start(t.Context(), exec.Command("/bin/true"), Options{}); !errors.Is(err, ErrClosed) {
		t.Errorf("Start after Close = %v, want ErrClosed", err)
	}
}

// TestParentDeathSignal checks that a child dies with the forker's thread,
// and only then: threads of other goroutines coming and going do not
// touch it.
func TestParentDeathSignal(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("the parent-death signal is Linux's")
	}
	f, _, _ := newForker(t)
	p, err := f.Start(t.Context(), exec.Command("sleep", "300"), Options{})
	if err != nil {
		t.Fatal(err)
	}
	// Goroutines locked to threads they end with: their threads exit.
	for range 8 {
		done := make(chan struct{})
		go func() {
			defer close(done)
			runtime.LockOSThread()
		}()
		<-done
	}
	time.Sleep(50 * time.Millisecond)
	if p.Exited() {
		t.Fatalf("child died with another thread: %+v", p.Wait())
	}
	t.Cleanup(func() {
		if !p.Exited() { // the test failed: do not leave it behind
			syscall.Kill(p.Pid(), syscall.SIGKILL)
		}
	})
	// Close ends the forker's thread without stopping the child: the
	// kernel kills it, and only then Close returns.
	closeWithin(t, f, 10*time.Second)
	if e := p.Wait(); e.Stopped || e.Code != 128+int(syscall.SIGKILL) {
		t.Errorf("Exit = %+v, want SIGKILL (137) from the kernel, not stopped", e)
	}
}

func TestEnviron(t *testing.T) {
	t.Setenv("PATH", "/parent/bin")
	t.Setenv("PARENT_ONLY", "must-not-leak")
	env := map[string]string{"B": "2", "A": "1"}
	if got, want := Environ(env), []string{"A=1", "B=2", "PATH=/parent/bin"}; !slices.Equal(got, want) {
		t.Errorf("Environ = %q, want %q", got, want)
	}
	if len(env) != 2 {
		t.Errorf("Environ modified its map: %v", env)
	}
	if got, want := Environ(map[string]string{"PATH": "/own/bin"}), []string{"PATH=/own/bin"}; !slices.Equal(got, want) {
		t.Errorf("Environ with PATH = %q, want %q", got, want)
	}
	t.Setenv("PATH", "")
	if got, want := Environ(nil), []string{"PATH=" + defaultPath}; !slices.Equal(got, want) {
		t.Errorf("Environ without any PATH = %q, want %q", got, want)
	}
}
