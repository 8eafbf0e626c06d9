package insights

import (
	"net/http"
	"strings"
	"testing"
	"time"
)

func TestRetryAfterForms(t *testing.T) {
	now := time.Date(2026, 12, 4, 5, 0, 0, 0, time.UTC)
	for _, tc := range []struct {
		header map[string]string
		want   time.Duration
	}{
		{map[string]string{"Retry-After": "3"}, 3 * time.Second},
		{map[string]string{"Retry-After": "0.5"}, 500 * time.Millisecond},
		{map[string]string{"Retry-After-Ms": "250", "Retry-After": "9"}, 250 * time.Millisecond},
		{map[string]string{"Retry-After": now.Add(90 * time.Second).Format(http.TimeFormat)}, 90 * time.Second},
		{map[string]string{"Retry-After": now.Add(-time.Minute).Format(http.TimeFormat)}, 0},
		{map[string]string{"Retry-After": "soon"}, 0},
		{map[string]string{}, 0},
	} {
		h := http.Header{}
		for k, v := range tc.header {
			h.Set(k, v)
		}
		if got := retryAfter(h, now); got != tc.want {
			t.Errorf("%v: %v, want %v", tc.header, got, tc.want)
		}
	}
}

func TestRedact(t *testing.T) {
	const key = "sk-proj-abcDEF123_xyz"
	got := redact("Incorrect API key provided: sk-pro**********_xyz. Also "+key+" and sk-other.key", key)
	for _, leak := range []string{"abcDEF", "_xyz", "sk-other", "sk-pro"} {
		if strings.Contains(got, leak) {
			t.Errorf("%q holds %q", got, leak)
		}
	}
	if !strings.HasPrefix(got, "Incorrect API key provided: [redacted]") {
		t.Errorf("redacted to %q", got)
	}
}

func TestClipKeepsRunes(t *testing.T) {
	s := strings.Repeat("é", 10) // 2 bytes each
	got := clip(s, 5)
	if got != "éé…" {
		t.Errorf("clip = %q", got)
	}
	if clip("short", 10) != "short" {
		t.Error("short string clipped")
	}
}
