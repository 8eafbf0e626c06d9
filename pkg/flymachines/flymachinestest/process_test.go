//go:build unix

package flymachinestest_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/interviewvm/controlplane/pkg/flymachines/flymachinestest"
)

// The test binary doubles as a machine's process: with helperEnv set it
// serves GET /env (its environment) and GET /exit?code=N (exits with N) on
// LISTEN_ADDR, exits 0 on SIGTERM, or ignores SIGTERM with helperIgnoreTerm.
const (
	helperEnv        = "FLYMACHINESTEST_HELPER"
	helperIgnoreTerm = "HELPER_IGNORE_TERM"
)

func runHelper() int {
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGTERM)
	ln, err := net.Listen("tcp", os.Getenv("LISTEN_ADDR"))
	if err != nil {
		fmt.Fprintln(os.Stderr, "helper: listen:", err)
		return 2
	}
	exit := make(chan int, 1)
	mux := http.NewServeMux()
	mux.HandleFunc("GET /env", func(w http.ResponseWriter, _ *http.Request) {
		_ = json.NewEncoder(w).Encode(os.Environ())
	})
	mux.HandleFunc("GET /exit", func(w http.ResponseWriter, r *http.Request) {
		code, _ := strconv.Atoi(r.URL.Query().Get("code"))
		w.WriteHeader(http.StatusNoContent)
		exit <- code
	})
	go func() { _ = http.Serve(ln, mux) }()
	fmt.Println(`{"level":"INFO","msg":"helper listening"}`)
	for {
		select {
		case code := <-exit:
			time.Sleep(20 * time.Millisecond) // let the answer go out
			return code
		case <-sigs:
			if os.Getenv(helperIgnoreTerm) == "" {
				return 0
			}
		}
	}
}

// freePort returns a TCP port free on the loopback interface.
func freePort(t *testing.T) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

func procGone(pid int) bool {
	_, err := os.Stat(fmt.Sprintf("/proc/%d", pid))
	return errors.Is(err, os.ErrNotExist)
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestProcessRunner(t *testing.T) {
	if _, err := os.Stat("/proc/self"); err != nil {
		t.Skip("needs /proc")
	}
	t.Setenv("LEAKED_FROM_TEST", "1") // must not reach the machines
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	runner, err := flymachinestest.NewProcessRunner(flymachinestest.ProcessRunnerConfig{
		Binary:      exe,
		Env:         map[string]string{helperEnv: "1", "APP_SECRET": "from-the-app", "A": "app"},
		StopTimeout: 300 * time.Millisecond,
	})
	if err != nil {
		t.Fatal(err)
	}
	s := flymachinestest.NewServer(flymachinestest.WithRunner(runner),
		flymachinestest.WithFirstIP(netip.MustParseAddr("127.0.13.2")))
	closed := false
	defer func() {
		if !closed {
			s.Close()
		}
	}()
	a := newAPI(t, s, "")
	port := strconv.Itoa(freePort(t))

	hc := &http.Client{Timeout: 5 * time.Second}
	get := func(addr, path string) (*http.Response, error) {
		var resp *http.Response
		var err error
		deadline := time.Now().Add(5 * time.Second)
		for { // the process may not listen yet: Fly's "started" is not "ready"
			resp, err = hc.Get("http://" + addr + path)
			if err == nil || time.Now().After(deadline) {
				return resp, err
			}
			time.Sleep(20 * time.Millisecond)
		}
	}

	create := func(name string, env map[string]string) (id, addr string) {
		t.Helper()
		env["SESSION_PORT"] = port
		body, _ := json.Marshal(map[string]any{"name": name, "config": map[string]any{
			"image": "sessionvm:test", "env": env, "auto_destroy": true, "restart": map[string]any{"policy": "no"},
		}})
		status, m, _ := a.do("POST", "", string(body))
		if status != 200 {
			t.Fatalf("create %s: %d %v", name, status, m)
		}
		id = m["id"].(string)
		if status, m, _ = a.do("GET", "/"+id+"/wait?state=started&timeout=10", ""); status != 200 {
			t.Fatalf("wait for %s: %d %v", name, status, m)
		}
		got, _ := s.Machine(app, id)
		addr = net.JoinHostPort(got.PrivateIP, port)
		resp, err := get(addr, "/env") // until it listens, and handles SIGTERM
		if err != nil {
			t.Fatalf("machine %s does not answer: %v", name, err)
		}
		resp.Body.Close()
		return id, addr
	}
	// The process runs with the machine's environment, on its own address.
	id1, addr1 := create("one", map[string]string{"A": "machine", "SESSION_ID": "s1"})
	resp, err := get(addr1, "/env")
	if err != nil {
		t.Fatal(err)
	}
	var environ []string
	_ = json.NewDecoder(resp.Body).Decode(&environ)
	resp.Body.Close()
	env := map[string]string{}
	for _, kv := range environ {
		k, v, _ := strings.Cut(kv, "=")
		env[k] = v
	}
	m1, _ := s.Machine(app, id1)
	for k, want := range map[string]string{
		"A": "machine", "SESSION_ID": "s1", "APP_SECRET": "from-the-app", "LISTEN_ADDR": addr1,
		"FLY_MACHINE_ID": id1, "FLY_APP_NAME": app, "FLY_PRIVATE_IP": m1.PrivateIP, "FLY_REGION": "iad",
		"FLY_IMAGE_REF": "sessionvm:test", "FLY_MACHINE_VERSION": m1.InstanceID,
	} {
		if env[k] != want {
			t.Errorf("process env %s = %q, want %q", k, env[k], want)
		}
	}
	if _, ok := env["LEAKED_FROM_TEST"]; ok {
		t.Error("the test's environment leaked into the machine's process")
	}
	pid1 := runner.PIDs()[id1]
	if pid1 == 0 {
		t.Fatalf("PIDs() = %v, want machine %s", runner.PIDs(), id1)
	}
	if pgid, err := syscall.Getpgid(pid1); err != nil || pgid != pid1 {
		t.Errorf("process group of %d = %d (%v), want its own", pid1, pgid, err)
	}

	// It exits on its own: the fake destroys the machine (auto_destroy) and
	// the process is reaped.
	if resp, err := get(addr1, "/exit?code=3"); err != nil {
		t.Fatal(err)
	} else {
		resp.Body.Close()
	}
	if status, m, _ := a.do("GET", "/"+id1+"/wait?state=destroyed&timeout=10", ""); status != 200 {
		t.Fatalf("wait destroyed after exit: %d %v", status, m)
	}
	waitFor(t, "the exited process to be reaped", func() bool { return procGone(pid1) })
	if got, _ := s.Machine(app, id1); got.State != "destroyed" {
		t.Errorf("machine after its process exited: %s", got.State)
	}

	// Stopped through the API: SIGTERM, reaped, machine gone.
	id2, _ := create("two", map[string]string{})
	pid2 := runner.PIDs()[id2]
	m2, _ := s.Machine(app, id2)
	a.do("POST", "/"+id2+"/stop", "")
	if status, m, _ := a.do("GET", "/"+id2+"/wait?state=destroyed&timeout=10&instance_id="+m2.InstanceID, ""); status != 200 {
		t.Fatalf("wait destroyed after stop: %d %v", status, m)
	}
	waitFor(t, "the stopped process to be reaped", func() bool { return procGone(pid2) })

	// One that ignores SIGTERM is killed after StopTimeout.
	id3, _ := create("three", map[string]string{helperIgnoreTerm: "1"})
	pid3 := runner.PIDs()[id3]
	start := time.Now()
	if status, m, _ := a.do("DELETE", "/"+id3+"?force=true", ""); status != 200 {
		t.Fatalf("destroy: %d %v", status, m)
	}
	waitFor(t, "the stubborn process to be killed and reaped", func() bool { return procGone(pid3) })
	if d := time.Since(start); d < 300*time.Millisecond {
		t.Errorf("stubborn process gone after %v, before the stop timeout", d)
	}

	// One left running is stopped when the server closes; the runner is
	// closed with it.
	id4, _ := create("four", map[string]string{})
	pid4 := runner.PIDs()[id4]
	s.Close()
	closed = true
	if !procGone(pid4) {
		t.Errorf("process %d still exists after Close", pid4)
	}
	if err := runner.Start(context.Background(), flymachinestest.RunMachine{ID: "x", PrivateIP: "127.0.0.1"}); !errors.Is(err, flymachinestest.ErrRunnerClosed) {
		t.Errorf("Start after Close = %v, want ErrRunnerClosed", err)
	}
}

func TestProcessRunnerStartFailureFailsTheBoot(t *testing.T) {
	runner, err := flymachinestest.NewProcessRunner(flymachinestest.ProcessRunnerConfig{Binary: "/nonexistent/sessionvm"})
	if err != nil {
		t.Fatal(err)
	}
	s := flymachinestest.NewServer(flymachinestest.WithRunner(runner))
	defer s.Close()
	a := newAPI(t, s, "")
	_, m, _ := a.do("POST", "", `{"name":"x","config":{"image":"x","auto_destroy":true,"restart":{"policy":"no"}}}`)
	id := m["id"].(string)
	status, body, _ := a.do("GET", "/"+id+"/wait?state=started&timeout=5", "")
	if status != 400 || !strings.Contains(fmt.Sprint(body["error"]), "failed to reach desired state") {
		t.Errorf("wait on a machine whose process cannot start: %d %v", status, body)
	}
	if got, _ := s.Machine(app, id); got.State != "destroyed" {
		t.Errorf("machine state = %s, want destroyed", got.State)
	}
}

func TestWaitScale(t *testing.T) {
	s := flymachinestest.NewServer(flymachinestest.WithWaitScale(100), flymachinestest.WithBootDelay(time.Hour))
	defer s.Close()
	a := newAPI(t, s, "")
	_, m, _ := a.do("POST", "", `{"config":{"image":"x"}}`)
	start := time.Now()
	status, _, _ := a.do("GET", "/"+m["id"].(string)+"/wait?state=started&timeout=60", "")
	if d := time.Since(start); status != http.StatusRequestTimeout || d > 5*time.Second || d < 500*time.Millisecond {
		t.Errorf("scaled 60 s wait: %d after %v, want 408 after 0.6 s", status, d)
	}
}
