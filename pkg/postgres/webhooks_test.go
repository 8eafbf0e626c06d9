package postgres_test

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/interviewvm/controlplane/pkg/postgres"
	"github.com/interviewvm/controlplane/pkg/postgres/postgrestest"
	"github.com/interviewvm/controlplane/pkg/session"
	"github.com/interviewvm/controlplane/pkg/webhooks"
)

// TestWebhookStore: a change creates one delivery per enabled, subscribed
// endpoint of its own tenant; the worker's store reads it in that tenant's
// scope only and counts attempts; erasing the interview erases the
// delivery and its payload.
func TestWebhookStore(t *testing.T) {
	db, _ := postgrestest.New(t)
	ctx := context.Background()
	tenant, other := uuid.NewString(), uuid.NewString()
	sc := session.TenantScope(tenant)
	c, p := seed(t, db, tenant)
	iv, err := db.CreateInterview(ctx, sc, session.Interview{CandidateID: c.ID, PositionID: p.ID, Architecture: "hybrid", MaxDurationS: 60})
	if err != nil {
		t.Fatal(err)
	}
	newEndpoint := func(scope session.Scope, events ...string) session.WebhookEndpoint {
		e, err := db.CreateWebhookEndpoint(ctx, scope, session.WebhookEndpoint{URL: "https://example.com/h", Events: events}, "whsec_"+uuid.NewString())
		if err != nil {
			t.Fatal(err)
		}
		return e
	}
	subscribed := newEndpoint(sc, "interview.cancelled", "interview.completed")
	newEndpoint(sc, "interview.completed")                         // not subscribed to the event
	newEndpoint(session.TenantScope(other), "interview.cancelled") // another tenant's
	gone := newEndpoint(sc, "interview.cancelled")
	if err := db.Webhooks().DisableEndpoint(ctx, webhooks.DeliverArgs{EndpointID: gone.ID, TenantID: tenant}); err != nil {
		t.Fatal(err)
	}

	body := []byte(`{"type":"interview.cancelled"}`)
	var created []webhooks.DeliverArgs
	tx, err := db.Pool.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	created, err = postgres.CreateWebhookDeliveriesTx(ctx, tx, tenant, iv.ID, webhooks.EventInterviewCancelled, body)
	if err != nil {
		t.Fatal(err)
	}
	if err := tx.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	if len(created) != 1 || created[0].EndpointID != subscribed.ID || created[0].TenantID != tenant {
		t.Fatalf("deliveries created = %+v, want one to endpoint %s", created, subscribed.ID)
	}
	args := created[0]

	ep, msg, err := db.Webhooks().Delivery(ctx, args)
	if err != nil || ep.URL != subscribed.URL || ep.Secret == "" || string(msg.Body) != string(body) || len(msg.ID) < 10 {
		t.Fatalf("Delivery = %+v %+v %v", ep, msg, err)
	}
	// Another tenant's scope finds nothing.
	wrong := args
	wrong.TenantID = other
	if _, _, err := db.Webhooks().Delivery(ctx, wrong); !errors.Is(err, webhooks.ErrDeliveryNotFound) {
		t.Fatalf("Delivery in another tenant's scope = %v, want ErrDeliveryNotFound", err)
	}

	now := time.Now()
	for i, a := range []webhooks.Attempt{
		{Number: 1, Status: webhooks.StatusPending, StatusCode: 500, Error: "answered 500", At: now, NextAttemptAt: now.Add(time.Second)},
		{Number: 1, Status: webhooks.StatusSucceeded, StatusCode: 200, At: now.Add(2 * time.Second)},
	} {
		if err := db.Webhooks().RecordAttempt(ctx, args, a); err != nil {
			t.Fatalf("attempt %d: %v", i, err)
		}
	}
	items, next, err := db.WebhookDeliveries(ctx, sc, subscribed.ID, session.Page{Limit: 10})
	if err != nil || next != "" || len(items) != 1 {
		t.Fatalf("WebhookDeliveries = %+v %q %v", items, next, err)
	}
	d := items[0]
	if d.Attempts != 2 || d.Status != "succeeded" || d.LastStatusCode == nil || *d.LastStatusCode != 200 || d.NextAttemptAt != nil || d.MessageID != msg.ID {
		t.Fatalf("delivery after two attempts = %+v", d)
	}
	if _, _, err := db.WebhookDeliveries(ctx, session.TenantScope(other), subscribed.ID, session.Page{Limit: 10}); err == nil {
		t.Fatal("another tenant listed the endpoint's deliveries")
	}

	// A manual retry makes it pending and enqueues it in the same transaction.
	var enqueued []webhooks.DeliverArgs
	if err := db.RetryWebhookDelivery(ctx, sc, subscribed.ID, d.ID, func(_ context.Context, _ pgx.Tx, a webhooks.DeliverArgs) error {
		enqueued = append(enqueued, a)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if len(enqueued) != 1 || enqueued[0] != args {
		t.Fatalf("retry enqueued %+v, want %+v", enqueued, args)
	}
	if items, _, _ := db.WebhookDeliveries(ctx, sc, subscribed.ID, session.Page{Limit: 10}); items[0].Status != "pending" {
		t.Fatalf("after a retry: %+v", items[0])
	}
	// A failing enqueue rolls the retry back.
	if err := db.RetryWebhookDelivery(ctx, sc, subscribed.ID, d.ID, func(context.Context, pgx.Tx, webhooks.DeliverArgs) error {
		return errors.New("queue down")
	}); err == nil {
		t.Fatal("a retry whose enqueue failed succeeded")
	}

	// Erasing the interview erases its delivery with the payload.
	if err := db.DeleteInterview(ctx, sc, iv.ID); err != nil {
		t.Fatal(err)
	}
	if _, _, err := db.Webhooks().Delivery(ctx, args); !errors.Is(err, webhooks.ErrDeliveryNotFound) {
		t.Fatalf("Delivery after erasure = %v, want ErrDeliveryNotFound", err)
	}
	if failures, err := db.WebhookFailures(ctx, subscribed.ID, 10); err != nil || len(failures) != 0 {
		t.Fatalf("failures after erasure = %+v %v", failures, err)
	}
}

// queryCountingTx counts the queries (reads) sent through a transaction.
type queryCountingTx struct {
	pgx.Tx
	queries int
}

func (t *queryCountingTx) Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error) {
	t.queries++
	return t.Tx.Query(ctx, sql, args...)
}

// TestTransitionHookGetsTheEndpointsRead: in a status change's
// transaction, the webhook hook's deliveries go to the same endpoints, in
// the same order, as when it looks them up itself, but without a query of
// its own: the endpoints were read with the interview (one round trip less
// while the row is locked), on the tenant's path and the system's (a VM's
// report). Outside such a transaction the lookup is a query.
func TestTransitionHookGetsTheEndpointsRead(t *testing.T) {
	db, _ := postgrestest.New(t)
	ctx := context.Background()
	tenant, other := uuid.NewString(), uuid.NewString()
	sc := session.TenantScope(tenant)
	c, p := seed(t, db, tenant)
	newEndpoint := func(scope session.Scope, events ...string) session.WebhookEndpoint {
		e, err := db.CreateWebhookEndpoint(ctx, scope, session.WebhookEndpoint{URL: "https://example.com/h", Events: events}, "whsec_"+uuid.NewString())
		if err != nil {
			t.Fatal(err)
		}
		return e
	}
	first := newEndpoint(sc, "interview.cancelled", "interview.ready")
	newEndpoint(sc, "interview.completed")                         // not subscribed to these events
	newEndpoint(session.TenantScope(other), "interview.cancelled") // another tenant's
	gone := newEndpoint(sc, "interview.cancelled", "interview.ready")
	if err := db.Webhooks().DisableEndpoint(ctx, webhooks.DeliverArgs{EndpointID: gone.ID, TenantID: tenant}); err != nil {
		t.Fatal(err)
	}
	second := newEndpoint(sc, "interview.ready")

	type call struct {
		to      session.State
		queries int
		got     []string
	}
	var calls []call
	db.OnTransition(func(ctx context.Context, tx pgx.Tx, iv session.Interview, _ session.State) error {
		ct := &queryCountingTx{Tx: tx}
		t := webhooks.EventInterviewCancelled
		if iv.Status == session.StateReady {
			t = webhooks.EventInterviewReady
		}
		created, err := postgres.CreateWebhookDeliveriesTx(ctx, ct, iv.TenantID, iv.ID, t, []byte(`{}`))
		if err != nil {
			return err
		}
		c := call{to: iv.Status, queries: ct.queries}
		for _, d := range created {
			c.got = append(c.got, d.EndpointID)
		}
		calls = append(calls, c)
		return nil
	}, session.StateReady, session.StateCancelled)

	iv, err := db.CreateInterview(ctx, sc, session.Interview{CandidateID: c.ID, PositionID: p.ID, Architecture: "hybrid", MaxDurationS: 60})
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	to := func(scope session.Scope, st session.State) {
		t.Helper()
		if _, err := db.UpdateInterview(ctx, scope, iv.ID, func(iv *session.Interview) ([]session.Event, error) {
			ev, err := iv.Transition(st, "", session.ActorUser, now)
			return []session.Event{ev}, err
		}); err != nil {
			t.Fatal(err)
		}
	}
	to(sc, session.StateProvisioning)
	to(session.SystemScope(), session.StateReady) // the VM's report
	to(sc, session.StateCancelled)
	want := []call{
		{to: session.StateReady, got: []string{first.ID, second.ID}},
		{to: session.StateCancelled, got: []string{first.ID}},
	}
	if fmt.Sprint(calls) != fmt.Sprint(want) {
		t.Fatalf("hook calls (status, queries, endpoints) = %v, want %v", calls, want)
	}

	// Outside a status change the lookup is a query, with the same answer.
	tx, err := db.Pool.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = tx.Rollback(ctx) }()
	ct := &queryCountingTx{Tx: tx}
	created, err := postgres.CreateWebhookDeliveriesTx(ctx, ct, tenant, iv.ID, webhooks.EventInterviewReady, []byte(`{}`))
	if err != nil {
		t.Fatal(err)
	}
	if ct.queries != 1 || len(created) != 2 || created[0].EndpointID != first.ID || created[1].EndpointID != second.ID {
		t.Fatalf("direct lookup: %d queries, deliveries %+v; want 1 query, endpoints %s then %s", ct.queries, created, first.ID, second.ID)
	}
}
