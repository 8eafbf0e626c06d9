package bench

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"maps"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"
)

// JWTSecret signs the harness's tenant tokens; every controller it starts
// shares it.
const JWTSecret = "bench-secret-0123456789abcdef"

// Env is what every case needs: the binaries, the database cluster and
// where to write logs.
type Env struct {
	// ControllerBin and SessionVMBin are absolute paths of the built
	// binaries.
	ControllerBin, SessionVMBin string
	// AdminURL is a PostgreSQL URL allowed to create databases (the
	// private cluster of scripts/pg.sh).
	AdminURL string
	// OutDir receives controller logs and profiles.
	OutDir string
	// Log receives progress lines.
	Log func(format string, args ...any)
	// DBParams, when set, is added to the query of every controller's
	// DATABASE_URL (e.g. "pool_max_conns=16"), for what-if runs.
	DBParams string
	// InProcess runs the fly- and local-provider controllers inside the
	// harness instead of as bin/controller processes (for profiling only).
	InProcess bool
}

func (e *Env) logf(format string, args ...any) {
	if e.Log != nil {
		e.Log(format, args...)
	}
}

// NewDatabase creates an empty database on the cluster and returns its URL
// and a function that drops it. The controller migrates it when it starts.
func (e *Env) NewDatabase(ctx context.Context, label string) (string, func(), error) {
	conn, err := pgx.Connect(ctx, e.AdminURL)
	if err != nil {
		return "", nil, fmt.Errorf("connect to %s: %w", redactURL(e.AdminURL), err)
	}
	defer conn.Close(context.Background())
	name := "bench_" + label + "_" + randHex(4)
	if _, err := conn.Exec(ctx, "CREATE DATABASE "+name); err != nil {
		return "", nil, fmt.Errorf("create database %s: %w", name, err)
	}
	u, err := url.Parse(e.AdminURL)
	if err != nil {
		return "", nil, fmt.Errorf("parse admin url: %w", err)
	}
	u.Path = "/" + name
	drop := func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		c, err := pgx.Connect(ctx, e.AdminURL)
		if err != nil {
			e.logf("drop database %s: %v", name, err)
			return
		}
		defer c.Close(ctx)
		if _, err := c.Exec(ctx, "DROP DATABASE IF EXISTS "+name+" WITH (FORCE)"); err != nil {
			e.logf("drop database %s: %v", name, err)
		}
	}
	return u.String(), drop, nil
}

// ServerVersion returns the cluster's PostgreSQL version.
func (e *Env) ServerVersion(ctx context.Context) string {
	conn, err := pgx.Connect(ctx, e.AdminURL)
	if err != nil {
		return "unknown"
	}
	defer conn.Close(context.Background())
	var v string
	if err := conn.QueryRow(ctx, "SHOW server_version").Scan(&v); err != nil {
		return "unknown"
	}
	return v
}

// Durability is what a cluster promises about a commit.
type Durability struct {
	Fsync, SynchronousCommit, FullPageWrites string
}

// On reports whether a commit is durable: fsync and synchronous_commit on.
func (d Durability) On() bool {
	return d.Fsync == "on" && d.SynchronousCommit != "off" && d.SynchronousCommit != "local" && d.SynchronousCommit != ""
}

func (d Durability) String() string {
	return fmt.Sprintf("fsync=%s, synchronous_commit=%s, full_page_writes=%s", d.Fsync, d.SynchronousCommit, d.FullPageWrites)
}

// Durability reads the cluster's durability settings; unknown ones are
// left empty.
func (e *Env) Durability(ctx context.Context) Durability {
	var d Durability
	conn, err := pgx.Connect(ctx, e.AdminURL)
	if err != nil {
		return d
	}
	defer conn.Close(context.Background())
	_ = conn.QueryRow(ctx, "SELECT current_setting('fsync'), current_setting('synchronous_commit'), current_setting('full_page_writes')").
		Scan(&d.Fsync, &d.SynchronousCommit, &d.FullPageWrites)
	return d
}

// addQuery adds the query parameters params ("k=v&k2=v2") to a URL.
func addQuery(raw, params string) (string, error) {
	u, err := url.Parse(raw)
	if err != nil {
		return "", fmt.Errorf("parse database url: %w", err)
	}
	extra, err := url.ParseQuery(params)
	if err != nil {
		return "", fmt.Errorf("database params %q: %w", params, err)
	}
	q := u.Query()
	for k, v := range extra {
		q[k] = v
	}
	u.RawQuery = q.Encode()
	return u.String(), nil
}

func redactURL(s string) string {
	u, err := url.Parse(s)
	if err != nil {
		return "(unparsable url)"
	}
	return u.Redacted()
}

func randHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// Controller is a bin/controller process.
type Controller struct {
	// Base is its API's base URL.
	Base string
	// PID is its process id.
	PID int
	// Settings are the environment variables it was started with
	// (secrets included: for the report, print only chosen ones).
	Settings map[string]string
	// DBURL is its database, for the harness's own connections (without
	// Env.DBParams).
	DBURL string

	cmd  *exec.Cmd
	done chan error
	log  *os.File
	stop func() // set for an in-process controller
}

// StartController runs bin/controller serve on a fresh loopback port with
// env (DATABASE_URL among it) added to the harness's defaults, and waits
// until /readyz answers 200. Its log goes to OutDir/<label>-controller.log.
func (e *Env) StartController(ctx context.Context, label string, env map[string]string) (*Controller, error) {
	port, err := FreePort()
	if err != nil {
		return nil, err
	}
	all := map[string]string{
		"LISTEN_ADDR": "127.0.0.1:" + strconv.Itoa(port),
		"JWT_SECRET":  JWTSecret,
		"LOG_FORMAT":  "json",
		// Our own API's per-user limit (default 20/s): the harness is one
		// user per tenant doing the work of many.
		"RATE_LIMIT": "1000000", "RATE_BURST": "1000000",
	}
	maps.Copy(all, env)
	dbURL := all["DATABASE_URL"]
	if e.DBParams != "" {
		withParams, err := addQuery(dbURL, e.DBParams)
		if err != nil {
			return nil, err
		}
		all["DATABASE_URL"] = withParams
	}
	if err := os.MkdirAll(e.OutDir, 0o755); err != nil {
		return nil, err
	}
	logf, err := os.Create(filepath.Join(e.OutDir, label+"-controller.log"))
	if err != nil {
		return nil, err
	}
	if e.InProcess && (all["PROVIDER"] == "fly" || all["PROVIDER"] == "local") {
		c, err := startInProcess(ctx, all, logf)
		if err != nil {
			logf.Close()
			return nil, err
		}
		c.log = logf
		c.DBURL = dbURL
		return c, nil
	}
	cmd := exec.Command(e.ControllerBin, "serve")
	cmd.Env = []string{"PATH=" + os.Getenv("PATH"), "HOME=" + os.Getenv("HOME")}
	for _, k := range slices.Sorted(maps.Keys(all)) {
		cmd.Env = append(cmd.Env, k+"="+all[k])
	}
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = childAttr()
	if err := cmd.Start(); err != nil {
		logf.Close()
		return nil, fmt.Errorf("start controller: %w", err)
	}
	c := &Controller{
		Base: "http://127.0.0.1:" + strconv.Itoa(port), PID: cmd.Process.Pid, Settings: all, DBURL: dbURL,
		cmd: cmd, done: make(chan error, 1), log: logf,
	}
	go func() { c.done <- cmd.Wait() }()
	deadline := time.Now().Add(60 * time.Second)
	for {
		select {
		case err := <-c.done:
			logf.Close()
			return nil, fmt.Errorf("controller exited before it was ready (%w); see %s", err, logf.Name())
		case <-ctx.Done():
			c.Stop()
			return nil, ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
		resp, err := http.Get(c.Base + "/readyz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return c, nil
			}
		}
		if time.Now().After(deadline) {
			c.Stop()
			return nil, fmt.Errorf("controller not ready within 60 s; see %s", logf.Name())
		}
	}
}

// Stop ends the controller (SIGTERM, then SIGKILL after 20 s) and waits.
func (c *Controller) Stop() {
	if c == nil {
		return
	}
	if c.stop != nil {
		c.stop()
		c.log.Close()
		return
	}
	_ = c.cmd.Process.Signal(syscall.SIGTERM)
	timer := time.NewTimer(20 * time.Second)
	defer timer.Stop()
	var exited error // how it exited does not matter: it was told to
	select {
	case exited = <-c.done:
	case <-timer.C:
		_ = c.cmd.Process.Kill()
		exited = <-c.done
	}
	_ = exited
	c.log.Close()
}

// Alive reports whether the process still runs.
func (c *Controller) Alive() bool {
	if c.stop != nil {
		return true
	}
	select {
	case err := <-c.done:
		c.done <- err
		return false
	default:
		return true
	}
}

// FreePort returns a TCP port free on 127.0.0.1 right now.
func FreePort() (int, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("find a free port: %w", err)
	}
	defer ln.Close()
	addr, ok := ln.Addr().(*net.TCPAddr)
	if !ok {
		return 0, errors.New("find a free port: not a TCP address")
	}
	return addr.Port, nil
}
