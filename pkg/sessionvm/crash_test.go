package sessionvm

import (
	"context"
	"io"
	"log/slog"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/interviewvm/controlplane/pkg/controlclient"
	"github.com/interviewvm/controlplane/pkg/controlclient/controlclienttest"
	"github.com/interviewvm/controlplane/pkg/session"
	"github.com/interviewvm/controlplane/pkg/transcript"
)

func TestPanicReportsFailedAndExitsNonZero(t *testing.T) {
	ctl := controlclienttest.NewServer()
	defer ctl.Close()
	id := uuid.NewString()
	ctl.AddSession("tok", session.VMConfig{SessionID: id})
	client := controlclient.New(controlclient.Config{BaseURL: ctl.URL, SessionID: id, Token: "tok",
		Logger: slog.New(slog.DiscardHandler)})
	defer client.CloseIdleConnections()
	exited := make(chan int, 1)
	v := &vm{log: slog.New(slog.NewTextHandler(io.Discard, nil)), client: client,
		asm: transcript.NewAssembler(transcript.AssemblerConfig{}), exit: func(code int) { exited <- code }}

	done := make(chan struct{})
	go func() {
		defer close(done)
		defer v.recoverCrash()
		panic("a bug")
	}()
	select {
	case code := <-exited:
		if code != 2 {
			t.Fatalf("exit code = %d, want 2", code)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("no exit after the panic")
	}
	<-done
	call, err := ctl.WaitCall(context.Background(), id, controlclienttest.RouteEnded, 1)
	if err != nil {
		t.Fatal(err)
	}
	var ended session.Ended
	if err := call.Decode(&ended); err != nil {
		t.Fatal(err)
	}
	if !ended.Failed || ended.Reason != session.ReasonMachineLost {
		t.Fatalf("crash report = %+v", ended)
	}
}
