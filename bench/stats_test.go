package bench

import (
	"testing"
	"time"
)

func TestSummarize(t *testing.T) {
	var d []time.Duration
	for i := 100; i >= 1; i-- {
		d = append(d, time.Duration(i)*time.Millisecond)
	}
	s := Summarize(d)
	if s.N != 100 || s.Min != time.Millisecond || s.Max != 100*time.Millisecond ||
		s.P50 != 50*time.Millisecond || s.P99 != 99*time.Millisecond {
		t.Fatalf("Summarize = %+v", s)
	}
	if d[0] != 100*time.Millisecond {
		t.Fatal("Summarize sorted its argument")
	}
	if got := Summarize(nil); got.N != 0 {
		t.Fatalf("Summarize(nil) = %+v", got)
	}
	if got := Percentile([]time.Duration{7}, 99); got != 7 {
		t.Fatalf("Percentile of one = %v", got)
	}
}

func TestThousands(t *testing.T) {
	for in, want := range map[float64]string{0: "0", 999: "999", 1000: "1,000", 1234567.4: "1,234,567"} {
		if got := thousands(in); got != want {
			t.Errorf("thousands(%v) = %q, want %q", in, got, want)
		}
	}
}

func TestBiggestGapSkipsUnprofilable(t *testing.T) {
	r := &Results{
		Ingest: &Ingest{VMs: 100, Batch: 50, PerSecond: 10_000, CopyPerSecond: 80_000},
		Local:  &Local{Sequential: Summary{P50: time.Second}},
	}
	gap, ok := r.BiggestGap()
	if !ok || gap.Profile != "ingest" {
		t.Fatalf("BiggestGap = %+v, %v; want the ingest row (local cannot be profiled)", gap, ok)
	}
	if md := r.Markdown(); len(md) == 0 {
		t.Fatal("empty markdown")
	}
}
