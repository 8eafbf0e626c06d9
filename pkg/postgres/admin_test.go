package postgres_test

import (
	"context"
	"slices"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/interviewvm/controlplane/pkg/postgres"
	"github.com/interviewvm/controlplane/pkg/postgres/postgrestest"
	"github.com/interviewvm/controlplane/pkg/session"
)

func TestListAllInterviewsCrossesTenantsWithFilters(t *testing.T) {
	db, _ := postgrestest.New(t)
	ctx := context.Background()
	a, b := uuid.NewString(), uuid.NewString()
	create := func(tenant string, to session.State) string {
		t.Helper()
		c, p := seed(t, db, tenant)
		sc := session.TenantScope(tenant)
		iv, err := db.CreateInterview(ctx, sc, session.Interview{CandidateID: c.ID, PositionID: p.ID, Architecture: "hybrid", MaxDurationS: 60})
		if err != nil {
			t.Fatal(err)
		}
		if to != session.StateScheduled {
			_, err = db.UpdateInterview(ctx, sc, iv.ID, func(iv *session.Interview) ([]session.Event, error) {
				ev, err := iv.Transition(to, "", session.ActorUser, time.Now())
				return []session.Event{ev}, err
			})
			if err != nil {
				t.Fatal(err)
			}
		}
		return iv.ID
	}
	a1 := create(a, session.StateScheduled)
	a2 := create(a, session.StateCancelled)
	b1 := create(b, session.StateScheduled)
	b2 := create(b, session.StateProvisioning)

	ids := func(f postgres.InterviewFilter, limit int) []string {
		t.Helper()
		var out []string
		cursor := ""
		for {
			page, next, err := db.ListAllInterviews(ctx, f, session.Page{Limit: limit, Cursor: cursor})
			if err != nil {
				t.Fatal(err)
			}
			for _, iv := range page {
				out = append(out, iv.ID)
			}
			if next == "" {
				return out
			}
			cursor = next
		}
	}
	for _, tc := range []struct {
		name string
		f    postgres.InterviewFilter
		want []string
	}{
		{"everything, newest first", postgres.InterviewFilter{}, []string{b2, b1, a2, a1}},
		{"one tenant", postgres.InterviewFilter{TenantID: a}, []string{a2, a1}},
		{"one status", postgres.InterviewFilter{Status: session.StateScheduled}, []string{b1, a1}},
		{"both", postgres.InterviewFilter{TenantID: b, Status: session.StateProvisioning}, []string{b2}},
		{"nothing matches", postgres.InterviewFilter{TenantID: uuid.NewString()}, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for _, limit := range []int{1, 3, 50} {
				if got := ids(tc.f, limit); !slices.Equal(got, tc.want) {
					t.Errorf("limit %d: got %v, want %v", limit, got, tc.want)
				}
			}
		})
	}
	for _, f := range []postgres.InterviewFilter{{Status: "nope"}, {TenantID: "not-a-uuid"}} {
		if _, _, err := db.ListAllInterviews(ctx, f, session.Page{}); session.ErrorCode(err) != session.EINVALID {
			t.Errorf("filter %+v: err = %v, want invalid", f, err)
		}
	}

	got, err := db.InterviewsByID(ctx, []string{a1, b2, uuid.NewString(), "not-a-uuid", ""})
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 || got[a1].TenantID != a || got[b2].TenantID != b || got[b2].Status != session.StateProvisioning {
		t.Fatalf("InterviewsByID = %+v, want a1 of tenant a and b2 of tenant b", got)
	}
	if none, err := db.InterviewsByID(ctx, nil); err != nil || len(none) != 0 {
		t.Fatalf("InterviewsByID(nil) = %v, %v", none, err)
	}
}
