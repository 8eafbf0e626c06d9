package bench

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"syscall"
	"time"

	"github.com/google/uuid"

	"github.com/interviewvm/controlplane/pkg/session"
)

// ExecReadyConfig sets up the VM's own share of case 1.
type ExecReadyConfig struct {
	// Samples after Warmup discarded ones.
	Samples, Warmup int
}

// RunExecReady measures the session VM alone: from exec of sessionvm (its
// listener inherited as fd 3, its configuration in the environment, as a
// started interview's machine gets them) until its ready report reaches a
// StubController. One VM at a time; each is stopped and reaped before the
// next.
func (e *Env) RunExecReady(ctx context.Context, cfg ExecReadyConfig) (Summary, error) {
	stub := NewStubController()
	defer stub.Close()
	var s Samples
	for i := range cfg.Warmup + cfg.Samples {
		d, err := e.execReady(ctx, stub)
		if err != nil {
			return s.Summary(), err
		}
		if i >= cfg.Warmup {
			s.Add(d)
		}
	}
	sum := s.Summary()
	e.logf("sessionvm exec → ready report: p50 %.1f ms p99 %.1f ms (%d samples)", ms(sum.P50), ms(sum.P99), sum.N)
	return sum, nil
}

// execReady runs one VM against stub and returns exec → ready report.
func (e *Env) execReady(ctx context.Context, stub *StubController) (time.Duration, error) {
	id := uuid.NewString()
	token := randHex(32)
	ready := stub.Expect(id, token)
	defer stub.Forget(id)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	lnFile, err := ln.(*net.TCPListener).File()
	ln.Close()
	if err != nil {
		return 0, err
	}
	cmd := exec.Command(e.SessionVMBin)
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
		return 0, fmt.Errorf("exec sessionvm: %w", err)
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
	select {
	case <-ready:
		return time.Since(start), nil
	case <-time.After(30 * time.Second):
		return 0, fmt.Errorf("sessionvm %s never reported ready", id)
	case <-ctx.Done():
		return 0, ctx.Err()
	}
}
