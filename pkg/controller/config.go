package controller

import (
	"cmp"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/interviewvm/controlplane/pkg/webhooks"
)

// Config is every setting of the controller. Each has an environment
// variable and a flag of the same name in lower-kebab case; the flag wins.
type Config struct {
	DatabaseURL         string
	ListenAddr          string
	MetricsAddr         string
	InternalAddr        string
	Provider            string
	InternalURL         string
	JWTSecret           string
	JWKSURL             string
	AccessTokenSecret   string
	JWTAudience         string
	Realtime            string
	RealtimeModel       string
	RealtimeVoice       string
	TranscribeModel     string
	MaxDuration         time.Duration
	HeartbeatInterval   time.Duration
	HeartbeatTimeout    time.Duration
	HeartbeatPersist    time.Duration
	ReconcileInterval   time.Duration
	SyntheticTurn       time.Duration
	AdoptAfter          time.Duration
	DeadlineGrace       time.Duration
	ProvisionTimeout    time.Duration
	IdleTimeout         time.Duration
	TenantMaxConcurrent int
	SessionVMBin        string
	FlyAPIURL           string
	FlyAPIToken         string
	FlyApp              string
	FlyRegion           string
	FlyRateLimit        float64
	SessionImage        string
	OpenAIAPIKey        string
	OpenAIBaseURL       string
	SessionPort         int
	MigrateOnStart      bool
	StreamKeepAlive     time.Duration
	RateLimit           float64
	RateBurst           int
	BehindFlyProxy      bool
	FlyReplayApp        string
	LogLevel            string
	LogFormat           string
	ShutdownTimeout     time.Duration
	Demo                bool
	CORSOrigins         string
	Regions             string
	PrewarmLead         time.Duration
	PrewarmTTL          time.Duration
	Insights            string
	InsightsModel       string
	InsightsTimeout     time.Duration

	WebhookRetrySchedule string
	WebhookAllowPrivate  bool
	JobRescueAfter       time.Duration
}

// regions returns the regions interviews may ask for: REGIONS, else the
// FLY_REGION list, else the local provider's single region.
func (c *Config) regions() []string {
	var out []string
	for _, r := range strings.Split(cmp.Or(c.Regions, c.FlyRegion), ",") {
		if r = strings.TrimSpace(r); r != "" && !slices.Contains(out, r) {
			out = append(out, r)
		}
	}
	if len(out) == 0 {
		out = []string{"local"}
	}
	return out
}

// setting binds one Config field to its environment variable and flag.
type setting struct {
	env, help, def string
	secret         bool
	set            func(string) error
}

func settings(c *Config) []setting {
	str := func(p *string) func(string) error { return func(v string) error { *p = v; return nil } }
	dur := func(p *time.Duration) func(string) error {
		return func(v string) error {
			d, err := time.ParseDuration(v)
			if err != nil {
				return fmt.Errorf("not a duration (like 30s or 45m): %q", v)
			}
			*p = d
			return nil
		}
	}
	num := func(p *int) func(string) error {
		return func(v string) error {
			n, err := strconv.Atoi(v)
			if err != nil {
				return fmt.Errorf("not an integer: %q", v)
			}
			*p = n
			return nil
		}
	}
	float := func(p *float64) func(string) error {
		return func(v string) error {
			f, err := strconv.ParseFloat(v, 64)
			if err != nil || f <= 0 {
				return fmt.Errorf("not a positive number: %q", v)
			}
			*p = f
			return nil
		}
	}
	boolean := func(p *bool) func(string) error {
		return func(v string) error {
			b, err := strconv.ParseBool(v)
			if err != nil {
				return fmt.Errorf("not a boolean: %q", v)
			}
			*p = b
			return nil
		}
	}
	return []setting{
		{env: "DATABASE_URL", help: "PostgreSQL URL (required)", set: str(&c.DatabaseURL), secret: true},
		{env: "LISTEN_ADDR", def: ":8080", help: "address of the HTTP API", set: str(&c.ListenAddr)},
		{env: "METRICS_ADDR", help: "address of a listener serving only /metrics (and /healthz); when set, the API's listener answers /metrics 404", set: str(&c.MetricsAddr)},
		{env: "INTERNAL_ADDR", help: "address of a listener serving only the session VMs' /internal/v1/* (and /healthz); when set, the API's listener answers them 404", set: str(&c.InternalAddr)},
		{env: "PROVIDER", def: "local", help: "machine provider: local (child processes) or fly", set: str(&c.Provider)},
		{env: "INTERNAL_URL", help: "URL session VMs use to reach the controller (default: http://127.0.0.1:<port of INTERNAL_ADDR, else of LISTEN_ADDR>)", set: str(&c.InternalURL)},
		{env: "JWT_SECRET", help: "HS256 secret of tenant JWTs, at least 16 bytes (this and/or JWKS_URL is required)", set: str(&c.JWTSecret), secret: true},
		{env: "JWKS_URL", help: "JWKS URL of ES256/RS256 tenant JWTs, e.g. https://<ref>.supabase.co/auth/v1/.well-known/jwks.json", set: str(&c.JWKSURL)},
		{env: "ACCESS_TOKEN_SECRET", help: "secret signing interview access tokens (default: derived from JWT_SECRET; required without it)", set: str(&c.AccessTokenSecret), secret: true},
		{env: "JWT_AUDIENCE", def: "authenticated", help: "required aud claim of tenant JWTs", set: str(&c.JWTAudience)},
		{env: "REALTIME", def: "simulated", help: "interviewer the VMs run: simulated, openai, or synthetic (no browser; a scripted candidate, for load and chaos runs)", set: str(&c.Realtime)},
		{env: "REALTIME_MODEL", def: "gpt-realtime", help: "OpenAI Realtime model that conducts the interview (REALTIME=openai)", set: str(&c.RealtimeModel)},
		{env: "REALTIME_VOICE", def: "marin", help: "the interviewer's voice (REALTIME=openai)", set: str(&c.RealtimeVoice)},
		{env: "TRANSCRIBE_MODEL", def: "gpt-4o-transcribe", help: "model that transcribes the candidate's answers (REALTIME=openai)", set: str(&c.TranscribeModel)},
		{env: "SYNTHETIC_TURN", def: "1s", help: "pace of the scripted candidate when REALTIME=synthetic", set: dur(&c.SyntheticTurn)},
		{env: "ADOPT_AFTER", def: "15s", help: "how long a start may stay provisioning without its launcher before the reconciler adopts it", set: dur(&c.AdoptAfter)},
		{env: "DEADLINE_GRACE", def: "30s", help: "time past an interview's max duration before the reconciler fails it", set: dur(&c.DeadlineGrace)},
		{env: "MAX_DURATION", def: "45m", help: "default and largest interview length", set: dur(&c.MaxDuration)},
		{env: "HEARTBEAT_INTERVAL", def: "2s", help: "how often session VMs report", set: dur(&c.HeartbeatInterval)},
		{env: "HEARTBEAT_TIMEOUT", def: "30s", help: "silence after which a session VM counts as lost", set: dur(&c.HeartbeatTimeout)},
		{env: "HEARTBEAT_PERSIST", def: "0s", help: "how stale a live VM's stored heartbeat may grow before it is written again (0: a quarter of HEARTBEAT_TIMEOUT; at most half of it)", set: dur(&c.HeartbeatPersist)},
		{env: "RECONCILE_INTERVAL", def: "10s", help: "period of the reconciler", set: dur(&c.ReconcileInterval)},
		{env: "PROVISION_TIMEOUT", def: "5m", help: "longest a start may take, rate-limit queueing included, before it fails with provision_failed", set: dur(&c.ProvisionTimeout)},
		{env: "IDLE_TIMEOUT", def: "0s", help: "end an interview no browser joins within this time (0: never)", set: dur(&c.IdleTimeout)},
		{env: "TENANT_MAX_CONCURRENT", def: "0", help: "live interviews per tenant (0: unlimited)", set: num(&c.TenantMaxConcurrent)},
		{env: "SESSIONVM_BIN", help: "sessionvm binary of the local provider (default: next to the controller, else on PATH)", set: str(&c.SessionVMBin)},
		{env: "FLY_API_URL", def: "https://api.machines.dev", help: "Fly Machines API base URL", set: str(&c.FlyAPIURL)},
		{env: "FLY_API_TOKEN", help: "Fly API token (fly provider)", set: str(&c.FlyAPIToken), secret: true},
		{env: "FLY_APP", help: "Fly app of the session machines (fly provider)", set: str(&c.FlyApp)},
		{env: "FLY_REGION", help: "preferred regions of session machines, comma-separated: a capacity error in one tries the next", set: str(&c.FlyRegion)},
		{env: "REGIONS", help: "regions an interview may ask for, comma-separated; the first is the default (default: FLY_REGION, or local)", set: str(&c.Regions)},
		{env: "PREWARM_LEAD", def: "10m", help: "how long before scheduled_at an interview's machine is created without booting (0: no pre-warm)", set: dur(&c.PrewarmLead)},
		{env: "PREWARM_TTL", def: "30m", help: "how long past scheduled_at a pre-warmed machine waits for its start before it is destroyed", set: dur(&c.PrewarmTTL)},
		{env: "FLY_RATE_LIMIT", def: "1", help: "Machines API requests per second the controller allows itself per action and machine (or app), with Fly's burst of 3 less 200 ms of refill kept in hand; Fly documents 1/s (fly provider)", set: float(&c.FlyRateLimit)},
		{env: "OPENAI_API_KEY", help: "OpenAI API key of the insights scorer (INSIGHTS=openai), also handed to local VMs as a platform secret (local provider, REALTIME=openai; on Fly it is a secret of the session app)", set: str(&c.OpenAIAPIKey), secret: true},
		{env: "OPENAI_BASE_URL", help: "OpenAI API base: for insights with its version path (an origin alone gets /v1; default https://api.openai.com/v1); local VMs get it as their realtime origin (default in the VM: https://api.openai.com)", set: str(&c.OpenAIBaseURL)},
		{env: "INSIGHTS", def: "simulated", help: "scorer of completed interviews: simulated (offline, deterministic), openai (Responses API; needs OPENAI_API_KEY) or off", set: str(&c.Insights)},
		{env: "INSIGHTS_MODEL", def: "gpt-5.5", help: "model of the openai insights scorer", set: str(&c.InsightsModel)},
		{env: "INSIGHTS_TIMEOUT", def: "5m", help: "bound of one request of the openai insights scorer; an analysis attempt may take this plus 30s, and one left by a dead replica is run again after the longer of that and JOB_RESCUE_AFTER", set: dur(&c.InsightsTimeout)},
		{env: "SESSION_IMAGE", help: "sessionvm image (fly provider)", set: str(&c.SessionImage)},
		{env: "SESSION_PORT", def: "8080", help: "port sessionvm listens on inside its VM", set: num(&c.SessionPort)},
		{env: "MIGRATE_ON_START", def: "true", help: "apply pending migrations when the controller starts", set: boolean(&c.MigrateOnStart)},
		{env: "STREAM_KEEPALIVE", def: "15s", help: "idle period after which a transcript stream sends a keep-alive comment", set: dur(&c.StreamKeepAlive)},
		{env: "RATE_LIMIT", def: "20", help: "requests per second each user (JWT subject) may make", set: float(&c.RateLimit)},
		{env: "RATE_BURST", def: "40", help: "burst of the per-user rate limit", set: num(&c.RateBurst)},
		{env: "BEHIND_FLY_PROXY", def: "false", help: "take the client address from Fly's Fly-Client-IP header", set: boolean(&c.BehindFlyProxy)},
		{env: "FLY_REPLAY_APP", help: "answer session routes of Fly machines with fly-replay to this app instead of proxying", set: str(&c.FlyReplayApp)},
		{env: "LOG_LEVEL", def: "info", help: "debug, info, warn or error", set: str(&c.LogLevel)},
		{env: "LOG_FORMAT", def: "auto", help: "text, json, or auto (text on a terminal, JSON otherwise)", set: str(&c.LogFormat)},
		{env: "SHUTDOWN_TIMEOUT", def: "15s", help: "grace period for in-flight requests on SIGINT/SIGTERM", set: dur(&c.ShutdownTimeout)},
		{env: "CORS_ORIGINS", help: "browser origins (scheme://host[:port], comma-separated, or *) allowed to call the API from other sites; empty: CORS off", set: str(&c.CORSOrigins)},
		{env: "WEBHOOK_RETRY_SCHEDULE", def: webhooks.DefaultRetrySchedule, help: "delays between webhook attempts, comma-separated; after the last one a delivery has failed", set: str(&c.WebhookRetrySchedule)},
		{env: "WEBHOOK_ALLOW_PRIVATE", def: "false", help: "let webhooks use http and reach loopback, private and link-local addresses (tests and local runs only)", set: boolean(&c.WebhookAllowPrivate)},
		{env: "JOB_RESCUE_AFTER", def: "6m", help: "how long a job may stay running before it is taken for dead (its replica died) and run again; at least 1m (a job is never taken before its own time limit, e.g. INSIGHTS_TIMEOUT + 30s, has passed either)", set: dur(&c.JobRescueAfter)},
		{env: "DEMO", def: "false", help: "serve the demo page (recruiter view and interview room) at /demo/; for development, not production", set: boolean(&c.Demo)},
	}
}

func flagName(env string) string { return strings.ToLower(strings.ReplaceAll(env, "_", "-")) }

// LoadConfig reads defaults, then the environment (getenv), then the flags
// in args; name is the flag set's, out receives usage and flag errors.
func LoadConfig(name string, args []string, getenv func(string) string, out io.Writer) (Config, error) {
	var c Config
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(out)
	list := settings(&c)
	for _, s := range list {
		if s.def != "" {
			if err := s.set(s.def); err != nil {
				return c, fmt.Errorf("default of %s: %w", s.env, err)
			}
		}
	}
	for _, s := range list {
		if v := getenv(s.env); v != "" {
			if err := s.set(v); err != nil {
				return c, fmt.Errorf("%s: %w", s.env, err)
			}
		}
	}
	for _, s := range list {
		s := s
		fs.Func(flagName(s.env), s.help, s.set)
	}
	fs.Usage = func() { usage(out, name, list) }
	if err := fs.Parse(args); err != nil {
		return c, err
	}
	if fs.NArg() > 0 {
		return c, fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}
	return c, nil
}

func usage(out io.Writer, name string, list []setting) {
	fmt.Fprintf(out, "Usage: controller [serve|migrate|token|sessions|machines|webhooks] [flags]\n\n"+
		"  serve    run the API (default)\n  migrate  apply pending database migrations and exit\n"+
		"  token    print a development JWT (flags: -tenant, -role, -ttl)\n"+
		"  sessions list|show|end|cancel   operate on interviews of every tenant\n"+
		"  machines list|gc                the provider's view; destroy orphans\n"+
		"  webhooks failures <endpoint>    an endpoint's failing deliveries\n\n"+
		"Settings of %s (flag, environment variable, default):\n", name)
	for _, s := range list {
		def := s.def
		if def == "" {
			def = "(none)"
		}
		fmt.Fprintf(out, "  --%-22s %-22s default %s\n      %s\n", flagName(s.env), s.env, def, s.help)
	}
}

// Validate checks the settings Serve needs.
func (c *Config) Validate() error {
	var errs []error
	if c.DatabaseURL == "" {
		errs = append(errs, errors.New("DATABASE_URL is required"))
	}
	switch {
	case c.JWTSecret == "" && c.JWKSURL == "":
		errs = append(errs, errors.New("JWT_SECRET (HS256) and/or JWKS_URL (ES256/RS256) is required"))
	case c.JWTSecret != "" && len(c.JWTSecret) < 16:
		errs = append(errs, errors.New("JWT_SECRET must be at least 16 bytes"))
	case c.JWTSecret == "" && len(c.AccessTokenSecret) < 16:
		errs = append(errs, errors.New("ACCESS_TOKEN_SECRET (at least 16 bytes) is required when JWT_SECRET is not set"))
	}
	if c.JWKSURL != "" {
		if u, err := url.Parse(c.JWKSURL); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			errs = append(errs, fmt.Errorf("JWKS_URL must be an http(s) URL, not %q", c.JWKSURL))
		}
	}
	switch c.Provider {
	case "local":
	case "fly":
		errs = append(errs, c.validateFly()...)
	default:
		errs = append(errs, fmt.Errorf("PROVIDER must be local or fly, not %q", c.Provider))
	}
	if c.Realtime == "openai" && c.Provider == "local" && c.OpenAIAPIKey == "" {
		errs = append(errs, errors.New("REALTIME=openai on the local provider needs OPENAI_API_KEY"))
	}
	if c.Realtime != "simulated" && c.Realtime != "openai" && c.Realtime != "synthetic" {
		errs = append(errs, fmt.Errorf("REALTIME must be simulated, openai or synthetic, not %q", c.Realtime))
	}
	switch c.Insights {
	case "simulated", "off":
	case "openai":
		if c.OpenAIAPIKey == "" {
			errs = append(errs, errors.New("INSIGHTS=openai needs OPENAI_API_KEY"))
		}
	default:
		errs = append(errs, fmt.Errorf("INSIGHTS must be simulated, openai or off, not %q", c.Insights))
	}
	if c.InsightsTimeout < time.Second {
		errs = append(errs, errors.New("INSIGHTS_TIMEOUT must be at least 1s"))
	}
	if c.MaxDuration < time.Second {
		errs = append(errs, errors.New("MAX_DURATION must be at least 1s"))
	}
	if c.HeartbeatInterval <= 0 || c.HeartbeatTimeout <= c.HeartbeatInterval {
		errs = append(errs, errors.New("HEARTBEAT_INTERVAL must be positive and below HEARTBEAT_TIMEOUT"))
	}
	if c.HeartbeatPersist < 0 || c.HeartbeatPersist > c.HeartbeatTimeout/2 {
		errs = append(errs, errors.New("HEARTBEAT_PERSIST must not be negative nor above half of HEARTBEAT_TIMEOUT"))
	}
	if c.InternalURL != "" {
		if u, err := url.Parse(c.InternalURL); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			errs = append(errs, fmt.Errorf("INTERNAL_URL must be an http(s) URL, not %q", c.InternalURL))
		}
	}
	if c.PrewarmLead < 0 || c.PrewarmTTL <= 0 {
		errs = append(errs, errors.New("PREWARM_LEAD must not be negative and PREWARM_TTL must be positive"))
	}
	if c.JobRescueAfter < time.Minute {
		errs = append(errs, errors.New("JOB_RESCUE_AFTER must be at least 1m (above every job's time limit)"))
	}
	if _, err := webhooks.ParseRetrySchedule(c.WebhookRetrySchedule); err != nil {
		errs = append(errs, err)
	}
	switch c.LogFormat {
	case "auto", "text", "json":
	default:
		errs = append(errs, fmt.Errorf("LOG_FORMAT must be auto, text or json, not %q", c.LogFormat))
	}
	return errors.Join(errs...)
}

// validateFly checks the settings of the fly provider.
func (c *Config) validateFly() []error {
	var errs []error
	for _, s := range [][2]string{{"FLY_API_TOKEN", c.FlyAPIToken}, {"FLY_APP", c.FlyApp}, {"SESSION_IMAGE", c.SessionImage}} {
		if s[1] == "" {
			errs = append(errs, fmt.Errorf("%s is required with PROVIDER=fly", s[0]))
		}
	}
	if u, err := url.Parse(c.FlyAPIURL); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		errs = append(errs, fmt.Errorf("FLY_API_URL must be an http(s) URL, not %q", c.FlyAPIURL))
	}
	if c.SessionPort < 1 || c.SessionPort > 65535 {
		errs = append(errs, fmt.Errorf("SESSION_PORT must be a port number, not %d", c.SessionPort))
	}
	return errs
}

// sessionVMBinary finds the sessionvm binary for the local provider.
func (c *Config) sessionVMBinary() string {
	if c.SessionVMBin != "" {
		return c.SessionVMBin
	}
	if exe, err := os.Executable(); err == nil {
		p := filepath.Join(filepath.Dir(exe), "sessionvm")
		if _, err := os.Stat(p); err == nil {
			return p
		}
	}
	return "sessionvm"
}
