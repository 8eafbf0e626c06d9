package controller

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"
	"time"

	"github.com/google/uuid"

	"github.com/interviewvm/controlplane/pkg/controlapi"
	"github.com/interviewvm/controlplane/pkg/postgres"
)

// Main is the controller command: args are what follows the program's
// name (a subcommand and its flags), getenv reads the environment. It
// returns flag.ErrHelp after printing the usage that was asked for.
func Main(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	return run(ctx, args, getenv, stdout, stderr, nil)
}

// run is the whole program. ready, when not nil, receives the API's
// address once it listens.
func run(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer, ready chan<- string) error {
	cmd := "serve"
	if len(args) > 0 && !strings.HasPrefix(args[0], "-") {
		cmd, args = args[0], args[1:]
	}
	switch cmd {
	case "serve", "migrate":
	case "token":
		return runToken(args, getenv, stdout, stderr)
	case "sessions", "machines", "webhooks":
		if cmd == "webhooks" && len(args) > 0 && args[0] == "receive" {
			return runReceive(ctx, args[1:], getenv, stdout, stderr, nil)
		}
		return runCLI(ctx, cmd, args, getenv, stdout, stderr)
	default:
		return fmt.Errorf("unknown command %q (want serve, migrate, token, sessions, machines or webhooks)", cmd)
	}
	cfg, err := LoadConfig("controller "+cmd, args, getenv, stderr)
	if err != nil {
		return err
	}
	logger, err := NewLogger(cfg, stderr)
	if err != nil {
		return err
	}
	if cmd == "migrate" {
		if cfg.DatabaseURL == "" {
			return errors.New("DATABASE_URL is required")
		}
		db, err := postgres.Open(ctx, cfg.DatabaseURL, logger)
		if err != nil {
			return err
		}
		defer db.Close()
		return migrate(ctx, db, logger)
	}
	if err := cfg.Validate(); err != nil {
		return fmt.Errorf("invalid configuration:\n%w", err)
	}
	return Serve(ctx, cfg, logger, ready)
}

// NewLogger is the controller's logger as LOG_LEVEL and LOG_FORMAT ask:
// JSON lines, or text when LOG_FORMAT=auto and w is a terminal.
func NewLogger(cfg Config, w io.Writer) (*slog.Logger, error) {
	var level slog.Level
	if err := level.UnmarshalText([]byte(cfg.LogLevel)); err != nil {
		return nil, fmt.Errorf("LOG_LEVEL: %w", err)
	}
	opts := &slog.HandlerOptions{Level: level}
	format := cfg.LogFormat
	if format == "auto" {
		format = "json"
		if f, ok := w.(*os.File); ok {
			if st, err := f.Stat(); err == nil && st.Mode()&os.ModeCharDevice != 0 {
				format = "text"
			}
		}
	}
	if format == "text" {
		return slog.New(slog.NewTextHandler(w, opts)), nil
	}
	return slog.New(slog.NewJSONHandler(w, opts)), nil
}

// runToken prints a development JWT signed with JWT_SECRET.
func runToken(args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("controller token", flag.ContinueOnError)
	fs.SetOutput(stderr)
	tenant := fs.String("tenant", "", "tenant UUID (default: a new one)")
	role := fs.String("role", "admin", "user_role claim: admin, recruiter or viewer")
	ttl := fs.Duration("ttl", 24*time.Hour, "lifetime")
	secret := fs.String("jwt-secret", getenv("JWT_SECRET"), "HS256 secret (env JWT_SECRET)")
	aud := fs.String("jwt-audience", firstNonEmpty(getenv("JWT_AUDIENCE"), "authenticated"), "aud claim (env JWT_AUDIENCE)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *tenant == "" {
		*tenant = uuid.NewString()
	}
	tok, err := controlapi.DevToken(*secret, *aud, *tenant, *role, *ttl)
	if err != nil {
		return err
	}
	fmt.Fprintln(stdout, tok)
	return nil
}

func firstNonEmpty(vs ...string) string {
	for _, v := range vs {
		if v != "" {
			return v
		}
	}
	return ""
}
