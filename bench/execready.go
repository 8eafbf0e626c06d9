package bench

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"time"

	"github.com/google/uuid"

	"github.com/interviewvm/controlplane/pkg/session"
)

// ExecReadyConfig sets up the VM's own share of case 1.
type ExecReadyConfig struct {
	// Samples after Warmup discarded ones, per measured series.
	Samples, Warmup int
}

// ExecReady is the VM's own share of case 1: three series measured with
// the same harness, sample by sample in turn.
type ExecReady struct {
	// Ready is sessionvm's exec → ready report.
	Ready Summary
	// Floor is the same for the minimal Go program of
	// bench/internal/floorvm: the platform floor.
	Floor Summary
	// Served is sessionvm's exec → first request answered: a request
	// sent to its port at exec, answered once it serves.
	Served Summary
}

// floorPkg is the floor VM's package, built by the bench.
const floorPkg = "github.com/interviewvm/controlplane/bench/internal/floorvm"

// RunExecReady measures the session VM alone: from exec of sessionvm (its
// listener inherited as fd 3, its configuration in the environment, as a
// started interview's machine gets them) until its ready report reaches a
// StubController; the same for the floor VM (built here from
// bench/internal/floorvm); and from exec of sessionvm until a request sent
// to its port at exec is answered. One VM at a time; each is stopped and
// reaped before the next.
func (e *Env) RunExecReady(ctx context.Context, cfg ExecReadyConfig) (ExecReady, error) {
	floorBin, err := e.buildFloorVM(ctx)
	if err != nil {
		return ExecReady{}, err
	}
	stub := NewStubController()
	defer stub.Close()
	var ready, floor, served Samples
	summary := func() ExecReady {
		return ExecReady{Ready: ready.Summary(), Floor: floor.Summary(), Served: served.Summary()}
	}
	for i := range cfg.Warmup + cfg.Samples {
		for _, m := range []struct {
			bin    string
			served bool
			into   *Samples
		}{{e.SessionVMBin, false, &ready}, {floorBin, false, &floor}, {e.SessionVMBin, true, &served}} {
			d, err := e.execReady(ctx, stub, m.bin, m.served)
			if err != nil {
				return summary(), err
			}
			if i >= cfg.Warmup {
				m.into.Add(d)
			}
		}
	}
	x := summary()
	e.logf("sessionvm exec → ready report: p50 %.1f ms p99 %.1f ms; floor (minimal Go program) p50 %.1f ms p99 %.1f ms; exec → first request served p50 %.1f ms p99 %.1f ms (%d samples each)",
		ms(x.Ready.P50), ms(x.Ready.P99), ms(x.Floor.P50), ms(x.Floor.P99), ms(x.Served.P50), ms(x.Served.P99), x.Ready.N)
	return x, nil
}

// buildFloorVM builds the floor VM into OutDir and returns its path.
func (e *Env) buildFloorVM(ctx context.Context) (string, error) {
	dir, err := filepath.Abs(e.OutDir)
	if err != nil {
		return "", err
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", err
	}
	bin := filepath.Join(dir, "floorvm")
	// Built as fly/sessionvm.Dockerfile builds sessionvm: static, stripped.
	build := exec.CommandContext(ctx, "go", "build", "-trimpath", "-ldflags=-s -w", "-o", bin, floorPkg)
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	out, err := build.CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("build the floor VM (%s): %w\n%s", floorPkg, err, out)
	}
	return bin, nil
}

// execReady runs one VM of bin against stub and returns exec → ready
// report, or with served exec → a request sent to the VM's port at exec
// answered.
func (e *Env) execReady(ctx context.Context, stub *StubController, bin string, served bool) (time.Duration, error) {
	id := uuid.NewString()
	token := randHex(32)
	ready := stub.Expect(id, token)
	defer stub.Forget(id)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	addr := ln.Addr().String()
	lnFile, err := ln.(*net.TCPListener).File()
	ln.Close()
	if err != nil {
		return 0, err
	}
	cmd := exec.Command(bin)
	cmd.Env = []string{
		session.EnvSessionID + "=" + id, session.EnvSessionToken + "=" + token,
		session.EnvControllerURL + "=" + stub.URL, session.EnvListenFD + "=3",
		session.EnvSessionConfig + "=" + ConfigEnv(id), "PATH=" + os.Getenv("PATH"),
	}
	cmd.ExtraFiles = []*os.File{lnFile}
	cmd.SysProcAttr = childAttr()
	start := time.Now()
	err = cmd.Start()
	lnFile.Close()
	if err != nil {
		return 0, fmt.Errorf("exec %s: %w", filepath.Base(bin), err)
	}
	defer func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		done := make(chan struct{})
		go func() { _ = cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			_ = cmd.Process.Kill()
			<-done
		}
	}()
	if served {
		// The listener is bound before exec: the connection waits in its
		// backlog until the VM serves.
		return e.firstServed(ctx, start, "http://"+addr+"/healthz")
	}
	select {
	case <-ready:
		return time.Since(start), nil
	case <-time.After(30 * time.Second):
		return 0, fmt.Errorf("%s %s never reported ready", filepath.Base(bin), id)
	case <-ctx.Done():
		return 0, ctx.Err()
	}
}

// firstServed sends one request to url and returns the time from start
// until its answer (200).
func (e *Env) firstServed(ctx context.Context, start time.Time, url string) (time.Duration, error) {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	hc := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return 0, err
	}
	resp, err := hc.Do(req)
	if err != nil {
		return 0, fmt.Errorf("first request to the VM: %w", err)
	}
	resp.Body.Close()
	d := time.Since(start)
	if resp.StatusCode != http.StatusOK {
		return 0, fmt.Errorf("first request to the VM: status %d", resp.StatusCode)
	}
	return d, nil
}
