package webhooks

import (
	"strings"
	"testing"
	"time"

	"github.com/riverqueue/river/rivertype"
)

func TestParseRetrySchedule(t *testing.T) {
	def, err := ParseRetrySchedule("")
	if err != nil {
		t.Fatal(err)
	}
	want := RetrySchedule{5 * time.Second, 5 * time.Minute, 30 * time.Minute, 2 * time.Hour, 5 * time.Hour, 10 * time.Hour, 10 * time.Hour}
	if len(def) != len(want) {
		t.Fatalf("default schedule %v", def)
	}
	for i := range want {
		if def[i] != want[i] {
			t.Fatalf("default schedule %v, want %v", def, want)
		}
	}
	if def.MaxAttempts() != 8 {
		t.Fatalf("MaxAttempts %d, want 8", def.MaxAttempts())
	}
	s, err := ParseRetrySchedule(" 1s, 250ms ")
	if err != nil || len(s) != 2 || s[1] != 250*time.Millisecond {
		t.Fatalf("ParseRetrySchedule(\" 1s, 250ms \") = %v, %v", s, err)
	}
	for _, bad := range []string{"5", "5s,,5m", "5s,-1s", "0s", "soon", "5s;5m"} {
		_, err := ParseRetrySchedule(bad)
		if err == nil || !strings.Contains(err.Error(), "WEBHOOK_RETRY_SCHEDULE") {
			t.Errorf("ParseRetrySchedule(%q): err %v, want an error naming WEBHOOK_RETRY_SCHEDULE", bad, err)
		}
	}
}

func TestRetryScheduleNextRetry(t *testing.T) {
	s := RetrySchedule{time.Minute, time.Hour}
	if d, ok := s.Delay(1); !ok || d != time.Minute {
		t.Fatalf("Delay(1) = %v, %v", d, ok)
	}
	if d, ok := s.Delay(2); !ok || d != time.Hour {
		t.Fatalf("Delay(2) = %v, %v", d, ok)
	}
	if _, ok := s.Delay(3); ok {
		t.Fatal("Delay(3): the third failure must be final with two retries")
	}
	before := time.Now()
	next := s.NextRetry(&rivertype.JobRow{Attempt: 2})
	if next.Before(before.Add(time.Hour)) || next.After(time.Now().Add(time.Hour)) {
		t.Fatalf("NextRetry after attempt 2 = %v, want about an hour from %v", next, before)
	}
}
