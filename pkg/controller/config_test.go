package controller

import (
	"io"
	"strings"
	"testing"
	"time"
)

func TestRealtimeAndListenerSettings(t *testing.T) {
	cfg, err := LoadConfig("controller", nil, func(string) string { return "" }, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.RealtimeModel != "gpt-realtime" || cfg.RealtimeVoice != "marin" || cfg.TranscribeModel != "gpt-4o-transcribe" {
		t.Errorf("realtime defaults = %q %q %q, want gpt-realtime marin gpt-4o-transcribe", cfg.RealtimeModel, cfg.RealtimeVoice, cfg.TranscribeModel)
	}
	if cfg.MetricsAddr != "" || cfg.InternalAddr != "" {
		t.Errorf("METRICS_ADDR %q, INTERNAL_ADDR %q by default, want both unset", cfg.MetricsAddr, cfg.InternalAddr)
	}
	env := map[string]string{"REALTIME_MODEL": "m", "REALTIME_VOICE": "v", "TRANSCRIBE_MODEL": "tm",
		"METRICS_ADDR": ":9091", "INTERNAL_ADDR": "fly-local-6pn:8081"}
	cfg, err = LoadConfig("controller", []string{"--realtime-voice=cedar"}, func(k string) string { return env[k] }, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.RealtimeModel != "m" || cfg.RealtimeVoice != "cedar" || cfg.TranscribeModel != "tm" ||
		cfg.MetricsAddr != ":9091" || cfg.InternalAddr != "fly-local-6pn:8081" {
		t.Errorf("config from the environment and flags = %+v", cfg)
	}
}

func TestInsightsTimeoutSetting(t *testing.T) {
	cfg, err := LoadConfig("controller", nil, func(string) string { return "" }, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.InsightsTimeout != 5*time.Minute {
		t.Errorf("INSIGHTS_TIMEOUT default = %s, want 5m", cfg.InsightsTimeout)
	}
	env := map[string]string{"DATABASE_URL": "postgres://x", "JWT_SECRET": strings.Repeat("s", 32), "INSIGHTS_TIMEOUT": "500ms"}
	cfg, err = LoadConfig("controller", nil, func(k string) string { return env[k] }, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if err := cfg.Validate(); err == nil || !strings.Contains(err.Error(), "INSIGHTS_TIMEOUT") {
		t.Errorf("INSIGHTS_TIMEOUT=500ms: Validate() = %v, want it refused", err)
	}
	env["INSIGHTS_TIMEOUT"] = "20s"
	cfg, err = LoadConfig("controller", nil, func(k string) string { return env[k] }, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if err := cfg.Validate(); err != nil && strings.Contains(err.Error(), "INSIGHTS_TIMEOUT") {
		t.Errorf("INSIGHTS_TIMEOUT=20s refused: %v", err)
	}
	if cfg.InsightsTimeout != 20*time.Second {
		t.Errorf("INSIGHTS_TIMEOUT=20s read as %s", cfg.InsightsTimeout)
	}
}

func TestHeartbeatPersistSetting(t *testing.T) {
	env := map[string]string{"DATABASE_URL": "postgres://x", "JWT_SECRET": strings.Repeat("s", 32)}
	load := func() Config {
		t.Helper()
		cfg, err := LoadConfig("controller", nil, func(k string) string { return env[k] }, io.Discard)
		if err != nil {
			t.Fatal(err)
		}
		return cfg
	}
	cfg := load()
	if err := cfg.Validate(); err != nil {
		t.Fatalf("defaults refused: %v", err)
	}
	if got := heartbeatPersist(cfg); got != 7500*time.Millisecond {
		t.Errorf("HEARTBEAT_PERSIST by default = %s, want a quarter of the 30s timeout", got)
	}
	env["HEARTBEAT_PERSIST"] = "3s"
	if cfg = load(); heartbeatPersist(cfg) != 3*time.Second || cfg.Validate() != nil {
		t.Errorf("HEARTBEAT_PERSIST=3s: %s, %v", heartbeatPersist(cfg), cfg.Validate())
	}
	for _, bad := range []string{"16s", "-1s"} {
		env["HEARTBEAT_PERSIST"] = bad
		cfg := load()
		if err := cfg.Validate(); err == nil || !strings.Contains(err.Error(), "HEARTBEAT_PERSIST") {
			t.Errorf("HEARTBEAT_PERSIST=%s with a 30s timeout: Validate() = %v, want it refused", bad, err)
		}
	}
}
