// Package postgres stores the control plane's data in PostgreSQL through
// pgx: the connection pool, the embedded goose migrations, and the stores
// for positions, candidates, interviews, their timelines and transcripts.
// SQL lives here and only here.
//
// Every query runs in a transaction with a scope (session.Scope). A tenant
// scope switches to the interview_app role and sets app.tenant_id, so
// row-level security decides what is visible; a query that forgets its
// tenant sees nothing. The system scope, used only by the internal API and
// the reconciler, sets app.system_scope instead.
package postgres

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/jackc/pgx/v5/stdlib"
	"github.com/pressly/goose/v3"
	"github.com/pressly/goose/v3/database"
	"github.com/pressly/goose/v3/lock"

	"github.com/interviewvm/controlplane/migrations"
	"github.com/interviewvm/controlplane/pkg/session"
)

// Schema is the PostgreSQL schema holding every table of the control plane.
const Schema = "interviews"

// versionTable is goose's bookkeeping table, kept inside our schema.
const versionTable = Schema + ".goose_db_version"

// DB is the pool and the stores built on it.
type DB struct {
	Pool   *pgxpool.Pool
	logger *slog.Logger
	// Now is the clock; tests may replace it.
	Now func() time.Time

	tenantsMu sync.Mutex
	tenants   map[string]bool // tenants known to have a row

	ingestOnce sync.Once
	ingest     *ingester // group commit of transcript batches, started on first use

	deferred deferredBeats // heartbeats put off because a flush held their row

	hooks         []transitionHook // see OnTransition
	insightsHooks []InsightsHook   // see OnInsights
	appendedHooks []AppendedHook   // see OnAppended
}

// Open connects to url and checks the connection.
func Open(ctx context.Context, url string, logger *slog.Logger) (*DB, error) {
	cfg, err := pgxpool.ParseConfig(url)
	if err != nil {
		return nil, fmt.Errorf("parse database url: %w", err)
	}
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("open database pool: %w", err)
	}
	if err := pool.Ping(ctx); err != nil {
		pool.Close()
		return nil, fmt.Errorf("ping database: %w", err)
	}
	return &DB{Pool: pool, logger: logger, Now: time.Now, tenants: map[string]bool{}, deferred: deferredBeats{beats: map[string]deferredBeat{}}}, nil
}

// Close stops transcript ingest and closes the pool.
func (db *DB) Close() {
	db.stopIngest()
	db.Pool.Close()
}

// Ping checks that the database answers.
func (db *DB) Ping(ctx context.Context) error { return db.Pool.Ping(ctx) }

func (db *DB) provider(sqlDB *sql.DB) (*goose.Provider, error) {
	locker, err := lock.NewPostgresSessionLocker()
	if err != nil {
		return nil, fmt.Errorf("migration locker: %w", err)
	}
	store, err := database.NewStore(goose.DialectPostgres, versionTable)
	if err != nil {
		return nil, fmt.Errorf("migration store: %w", err)
	}
	var root fs.FS = migrations.FS
	return goose.NewProvider("", sqlDB, root,
		goose.WithStore(store), goose.WithSessionLocker(locker), goose.WithSlog(db.logger))
}

// Migrate applies every pending migration. Concurrent controllers serialise
// on a PostgreSQL advisory lock.
func (db *DB) Migrate(ctx context.Context) error {
	if _, err := db.Pool.Exec(ctx, "CREATE SCHEMA IF NOT EXISTS "+Schema); err != nil {
		return fmt.Errorf("create schema %s: %w", Schema, err)
	}
	sqlDB := stdlib.OpenDBFromPool(db.Pool)
	defer sqlDB.Close()
	p, err := db.provider(sqlDB)
	if err != nil {
		return err
	}
	results, err := p.Up(ctx)
	if err != nil {
		return fmt.Errorf("migrate: %w", err)
	}
	for _, r := range results {
		db.logger.Info("migration applied", "version", r.Source.Version, "file", r.Source.Path, "duration", r.Duration)
	}
	return nil
}

// SchemaCurrent reports whether every embedded migration has been applied.
func (db *DB) SchemaCurrent(ctx context.Context) (bool, error) {
	var exists bool
	if err := db.Pool.QueryRow(ctx, "SELECT to_regclass($1) IS NOT NULL", versionTable).Scan(&exists); err != nil {
		return false, fmt.Errorf("check migration table: %w", err)
	}
	if !exists {
		return false, nil
	}
	sqlDB := stdlib.OpenDBFromPool(db.Pool)
	defer sqlDB.Close()
	p, err := db.provider(sqlDB)
	if err != nil {
		return false, err
	}
	pending, err := p.HasPending(ctx)
	if err != nil {
		return false, fmt.Errorf("check pending migrations: %w", err)
	}
	return !pending, nil
}

// inScope runs fn in a transaction limited to scope. BEGIN and the scope
// go to the server together, in one round trip; fn's statements follow on
// the open transaction, then COMMIT (ROLLBACK when fn fails).
func (db *DB) inScope(ctx context.Context, scope session.Scope, fn func(pgx.Tx) error) error {
	b := &pgx.Batch{}
	b.Queue("BEGIN")
	if err := db.queueScope(ctx, b, scope); err != nil {
		return err
	}
	pc, err := db.Pool.Acquire(ctx)
	if err != nil {
		return err
	}
	defer pc.Release() // a connection left in a transaction is discarded
	conn := pc.Conn()
	committed := false
	defer func() {
		if !committed {
			_, _ = conn.Exec(context.WithoutCancel(ctx), "ROLLBACK")
		}
	}()
	if err := conn.SendBatch(ctx, b).Close(); err != nil {
		return fmt.Errorf("enter scope: %w", err)
	}
	if err := fn(openTx{conn}); err != nil {
		return err
	}
	if err := commit(ctx, conn); err != nil {
		return err
	}
	committed = true
	return nil
}

// commit commits the transaction open on conn. A transaction a failed
// statement aborted answers COMMIT with ROLLBACK: that is an error.
func commit(ctx context.Context, conn *pgx.Conn) error {
	tag, err := conn.Exec(ctx, "COMMIT")
	if err != nil {
		return err
	}
	if tag.String() == "ROLLBACK" {
		return pgx.ErrTxCommitRollback
	}
	return nil
}

// queueScope queues the statement that limits a pipelined transaction to
// scope (see inScope).
func (db *DB) queueScope(ctx context.Context, b *pgx.Batch, scope session.Scope) error {
	switch {
	case scope.System:
		b.Queue("SELECT set_config('role', 'interview_app', true), set_config('app.system_scope', 'on', true)")
	case scope.TenantID != "":
		if err := db.ensureTenant(ctx, scope.TenantID); err != nil {
			return err
		}
		b.Queue("SELECT set_config('role', 'interview_app', true), set_config('app.tenant_id', $1, true)", scope.TenantID)
	default:
		return errors.New("database transaction without a tenant or the system scope")
	}
	return nil
}

func (db *DB) ensureTenant(ctx context.Context, tenantID string) error {
	db.tenantsMu.Lock()
	known := db.tenants[tenantID]
	db.tenantsMu.Unlock()
	if known {
		return nil
	}
	err := pgx.BeginFunc(ctx, db.Pool, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, "SET LOCAL ROLE interview_app"); err != nil {
			return err
		}
		if _, err := tx.Exec(ctx, "SELECT set_config('app.tenant_id', $1, true)", tenantID); err != nil {
			return err
		}
		_, err := tx.Exec(ctx, "INSERT INTO interviews.tenants (id) VALUES ($1) ON CONFLICT (id) DO NOTHING", tenantID)
		return err
	})
	if err != nil {
		return fmt.Errorf("register tenant: %w", mapError(err))
	}
	db.tenantsMu.Lock()
	db.tenants[tenantID] = true
	db.tenantsMu.Unlock()
	return nil
}

// mapError turns PostgreSQL errors that come from bad input into domain
// errors; anything else is returned unchanged.
func mapError(err error) error {
	if errors.Is(err, pgx.ErrNoRows) {
		return session.Errorf(session.ENOTFOUND, "not found")
	}
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		switch pgErr.Code {
		case "22P02": // invalid_text_representation (e.g. a malformed uuid)
			return session.Errorf(session.EINVALID, "malformed value")
		case "23514": // check_violation
			return session.Errorf(session.EINVALID, "value out of range (%s)", pgErr.ConstraintName)
		case "23505": // unique_violation
			return session.Errorf(session.ECONFLICT, "already exists")
		}
	}
	return err
}
