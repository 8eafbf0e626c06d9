package postgres_test

import (
	"context"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/interviewvm/controlplane/pkg/postgres/postgrestest"
)

func TestPoolCollector(t *testing.T) {
	db, _ := postgrestest.New(t)
	reg := prometheus.NewPedanticRegistry()
	if err := reg.Register(db.Collector()); err != nil {
		t.Fatal(err)
	}
	gather := func(name string) float64 {
		t.Helper()
		mfs, err := reg.Gather()
		if err != nil {
			t.Fatal(err)
		}
		for _, mf := range mfs {
			if mf.GetName() != name {
				continue
			}
			m := mf.GetMetric()[0]
			if c := m.GetCounter(); c != nil {
				return c.GetValue()
			}
			return m.GetGauge().GetValue()
		}
		t.Fatalf("%s is not collected", name)
		return 0
	}
	if n := gather("pgxpool_max_conns"); n < 1 {
		t.Errorf("pgxpool_max_conns = %v, want the pool's size", n)
	}
	before := gather("pgxpool_acquire_total")
	if err := db.Ping(context.Background()); err != nil {
		t.Fatal(err)
	}
	if after := gather("pgxpool_acquire_total"); after != before+1 {
		t.Errorf("pgxpool_acquire_total went from %v to %v over one ping, want +1", before, after)
	}
	mfs, err := reg.Gather()
	if err != nil || len(mfs) != 13 {
		t.Errorf("pool collector yields %d metric families (%v), want the pool's whole Stat", len(mfs), err)
	}
}
