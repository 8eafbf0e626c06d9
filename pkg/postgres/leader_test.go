package postgres_test

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/interviewvm/controlplane/pkg/postgres/postgrestest"
)

func TestLeadershipMovesWhenTheLeadersConnectionDies(t *testing.T) {
	db, _ := postgrestest.New(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()

	var mu sync.Mutex
	leading := map[string]bool{}
	gained := make(chan string, 10)
	var wg sync.WaitGroup
	for _, name := range []string{"a", "b"} {
		wg.Go(func() {
			db.Lead(ctx, 42, 50*time.Millisecond, func(on bool) {
				mu.Lock()
				leading[name] = on
				mu.Unlock()
			}, func(lctx context.Context) {
				gained <- name
				<-lctx.Done()
			})
		})
	}
	first := <-gained
	time.Sleep(200 * time.Millisecond) // the other keeps trying meanwhile
	mu.Lock()
	if leading["a"] && leading["b"] {
		t.Fatal("two leaders at once")
	}
	mu.Unlock()
	select {
	case second := <-gained:
		t.Fatalf("%s gained leadership while %s held it", second, first)
	default:
	}

	// Kill the leader's connection: PostgreSQL drops its advisory lock.
	var pid int
	err := db.Pool.QueryRow(ctx, `SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND granted
		AND database = (SELECT oid FROM pg_database WHERE datname = current_database())`).Scan(&pid)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := db.Pool.Exec(ctx, `SELECT pg_terminate_backend($1)`, pid); err != nil {
		t.Fatal(err)
	}
	select {
	case second := <-gained:
		if second == first {
			// The same replica may win again after reconnecting; what
			// matters is that leadership was lost and regained, once.
			t.Logf("%s regained leadership", second)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("nobody took over the leadership")
	}
	time.Sleep(200 * time.Millisecond)
	mu.Lock()
	n := 0
	for _, on := range leading {
		if on {
			n++
		}
	}
	mu.Unlock()
	if n != 1 {
		t.Fatalf("%d leaders after the takeover, want 1", n)
	}
	cancel()
	wg.Wait()
	mu.Lock()
	defer mu.Unlock()
	if leading["a"] || leading["b"] {
		t.Fatal("leadership not released on shutdown")
	}
}
