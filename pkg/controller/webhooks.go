package controller

import (
	"context"
	"errors"
	"log/slog"
	"maps"
	"slices"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/riverqueue/river"

	"github.com/interviewvm/controlplane/pkg/jobs"
	"github.com/interviewvm/controlplane/pkg/postgres"
	"github.com/interviewvm/controlplane/pkg/session"
	"github.com/interviewvm/controlplane/pkg/webhooks"
)

// webhookConcurrency is how many deliveries one replica works at once.
const webhookConcurrency = 50

// interviewEvents maps the statuses that send a webhook to their event.
var interviewEvents = map[session.State]webhooks.EventType{
	session.StateReady:      webhooks.EventInterviewReady,
	session.StateInProgress: webhooks.EventInterviewInProgress,
	session.StateCompleted:  webhooks.EventInterviewCompleted,
	session.StateFailed:     webhooks.EventInterviewFailed,
	session.StateCancelled:  webhooks.EventInterviewCancelled,
}

// webhookWiring assembles webhooks: the delivery worker on the job queue,
// the transition hook that creates an interview's deliveries in the
// transaction of its status change, and the API's endpoints service.
type webhookWiring struct {
	db           *postgres.DB
	allowPrivate bool
	resolver     webhooks.Resolver
	deliverer    *webhooks.Deliverer
	logger       *slog.Logger
	// jc is set by attach, before the controller serves.
	jc *jobs.Client
}

// addWebhooks registers the delivery worker and its queue on q; call
// attach with the opened client before anything changes an interview.
func addWebhooks(cfg Config, db *postgres.DB, q *jobQueue, logger *slog.Logger, reg prometheus.Registerer) (*webhookWiring, error) {
	schedule, err := webhooks.ParseRetrySchedule(cfg.WebhookRetrySchedule)
	if err != nil {
		return nil, err
	}
	metrics, err := webhooks.NewMetrics(reg)
	if err != nil {
		return nil, err
	}
	d := webhooks.NewDeliverer(webhooks.DelivererConfig{AllowPrivate: cfg.WebhookAllowPrivate}, metrics)
	river.AddWorker(q.workers, webhooks.NewDeliverWorker(db.Webhooks(), d, schedule, metrics, logger))
	q.queue(webhooks.Queue, webhookConcurrency)
	return &webhookWiring{db: db, allowPrivate: cfg.WebhookAllowPrivate, deliverer: d, logger: logger}, nil
}

// attach gives the wiring the job client and installs the transition
// hook.
func (w *webhookWiring) attach(jc *jobs.Client) {
	w.jc = jc
	w.db.OnTransition(w.onTransition, slices.Collect(maps.Keys(interviewEvents))...)
	w.db.OnInsights(w.onInsights)
}

// close releases the deliverer's idle connections; call it after the job
// queue stopped.
func (w *webhookWiring) close() { w.deliverer.Close() }

// onTransition creates the deliveries of an interview's status change and
// enqueues them, in the change's transaction: a rolled-back change sends
// nothing, a committed one cannot lose its events.
func (w *webhookWiring) onTransition(ctx context.Context, tx pgx.Tx, iv session.Interview, _ session.State) error {
	t, ok := interviewEvents[iv.Status]
	if !ok {
		return nil
	}
	return w.emitTx(ctx, tx, iv.TenantID, iv.ID, t, iv)
}

// onInsights sends insights.ready or insights.failed in the transaction
// that stores an analysis' outcome (not_applicable sends nothing).
func (w *webhookWiring) onInsights(ctx context.Context, tx pgx.Tx, iv session.Interview, status session.InsightsStatus) error {
	switch status {
	case session.InsightsReady:
		return w.emitTx(ctx, tx, iv.TenantID, iv.ID, webhooks.EventInsightsReady, iv)
	case session.InsightsFailed:
		return w.emitTx(ctx, tx, iv.TenantID, iv.ID, webhooks.EventInsightsFailed, iv)
	}
	return nil
}

// emitTx sends event t about interview (the API's interview object) to
// every enabled endpoint of the tenant subscribed to it, in tx. The
// insights job calls it with insights.ready or insights.failed in the
// transaction that stores the analysis.
func (w *webhookWiring) emitTx(ctx context.Context, tx pgx.Tx, tenantID, interviewID string, t webhooks.EventType, interview any) error {
	body, err := webhooks.NewBody(t, time.Now(), interview)
	if err != nil {
		return err
	}
	deliveries, err := postgres.CreateWebhookDeliveriesTx(ctx, tx, tenantID, interviewID, t, body)
	if err != nil {
		return err
	}
	for _, d := range deliveries {
		if err := w.enqueueTx(ctx, tx, d); err != nil {
			return err
		}
	}
	return nil
}

func (w *webhookWiring) enqueueTx(ctx context.Context, tx pgx.Tx, args webhooks.DeliverArgs) error {
	if w.jc == nil {
		return errors.New("webhook delivery: the job queue is not open")
	}
	_, err := w.jc.InsertTx(ctx, tx, args, nil)
	return err
}

// CreateWebhookEndpoint validates and registers an endpoint.
func (w *webhookWiring) CreateWebhookEndpoint(ctx context.Context, scope session.Scope, e session.WebhookEndpoint) (session.WebhookEndpoint, string, error) {
	events, err := webhooks.ParseEvents(e.Events)
	if err != nil {
		return session.WebhookEndpoint{}, "", session.Errorf(session.EINVALID, "%v", err)
	}
	u, err := webhooks.ValidateURL(ctx, w.resolver, e.URL, w.allowPrivate)
	if err != nil {
		return session.WebhookEndpoint{}, "", session.Errorf(session.EINVALID, "url: %v", err)
	}
	secret, err := webhooks.NewSecret()
	if err != nil {
		return session.WebhookEndpoint{}, "", err
	}
	e.URL = u.String()
	e.Events = make([]string, len(events))
	for i, t := range events {
		e.Events[i] = string(t)
	}
	out, err := w.db.CreateWebhookEndpoint(ctx, scope, e, secret)
	if err != nil {
		return session.WebhookEndpoint{}, "", err
	}
	return out, secret, nil
}

// ListWebhookEndpoints lists the tenant's endpoints.
func (w *webhookWiring) ListWebhookEndpoints(ctx context.Context, scope session.Scope, p session.Page) ([]session.WebhookEndpoint, string, error) {
	return w.db.ListWebhookEndpoints(ctx, scope, p)
}

// DeleteWebhookEndpoint deletes an endpoint and its deliveries.
func (w *webhookWiring) DeleteWebhookEndpoint(ctx context.Context, scope session.Scope, id string) error {
	return w.db.DeleteWebhookEndpoint(ctx, scope, id)
}

// WebhookDeliveries lists an endpoint's deliveries.
func (w *webhookWiring) WebhookDeliveries(ctx context.Context, scope session.Scope, endpointID string, p session.Page) ([]session.WebhookDelivery, string, error) {
	return w.db.WebhookDeliveries(ctx, scope, endpointID, p)
}

// RetryWebhookDelivery makes a delivery pending and enqueues it again.
func (w *webhookWiring) RetryWebhookDelivery(ctx context.Context, scope session.Scope, endpointID, deliveryID string) error {
	return w.db.RetryWebhookDelivery(ctx, scope, endpointID, deliveryID, w.enqueueTx)
}
