package postgres

import (
	"context"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
)

// LeaderLockID is the advisory lock key controller replicas elect their
// leader on.
const LeaderLockID int64 = 0x696e7476_6c656164 // "intv" "lead"

// Lead runs fn while this process holds the leadership, and waits to
// regain it after losing it, until ctx ends. Leadership is a PostgreSQL
// session advisory lock held on a connection of its own (not from the
// pool): when that connection dies, PostgreSQL releases the lock, and the
// process notices within check (it pings the connection) and cancels fn's
// context. onChange reports leadership (true when gained, false when lost).
func (db *DB) Lead(ctx context.Context, key int64, check time.Duration, onChange func(bool), fn func(ctx context.Context)) {
	if check <= 0 {
		check = time.Second
	}
	cfg := db.Pool.Config().ConnConfig.Copy()
	for ctx.Err() == nil {
		err := db.leadOnce(ctx, cfg, key, check, onChange, fn)
		if ctx.Err() != nil {
			return
		}
		if err != nil {
			db.logger.Warn("leader election", "error", err)
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(check):
		}
	}
}

func (db *DB) leadOnce(ctx context.Context, cfg *pgx.ConnConfig, key int64, check time.Duration, onChange func(bool), fn func(context.Context)) error {
	conn, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		return fmt.Errorf("connect for leader election: %w", err)
	}
	defer conn.Close(context.WithoutCancel(ctx)) // closing releases the lock
	for {
		var got bool
		if err := conn.QueryRow(ctx, "SELECT pg_try_advisory_lock($1)", key).Scan(&got); err != nil {
			return fmt.Errorf("try leader lock: %w", err)
		}
		if got {
			break
		}
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(check):
		}
	}
	db.logger.Info("leadership gained")
	onChange(true)
	defer onChange(false)
	lctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		fn(lctx)
	}()
	t := time.NewTicker(check)
	defer t.Stop()
	var lost error
loop:
	for {
		select {
		case <-done:
			break loop
		case <-ctx.Done():
			break loop
		case <-t.C:
			pctx, pcancel := context.WithTimeout(ctx, check)
			err := conn.Ping(pctx)
			pcancel()
			if err != nil && ctx.Err() == nil {
				lost = fmt.Errorf("leader connection lost: %w", err)
				break loop
			}
		}
	}
	cancel()
	<-done
	if lost != nil {
		db.logger.Warn("leadership lost", "error", lost)
	}
	return lost
}
