package postgres

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/interviewvm/controlplane/pkg/session"
	"github.com/interviewvm/controlplane/pkg/webhooks"
)

// This file keeps webhook endpoints and their deliveries: the API's
// endpoints and deliveries lists, the deliveries a status change creates
// (in its transaction), and webhooks.Store for the delivery worker.

const webhookEndpointColumns = `id, tenant_id, url, events, description, disabled, created_at`

func scanWebhookEndpoint(r pgx.Row) (session.WebhookEndpoint, error) {
	var e session.WebhookEndpoint
	err := r.Scan(&e.ID, &e.TenantID, &e.URL, &e.Events, &e.Description, &e.Disabled, &e.CreatedAt)
	return e, err
}

const webhookDeliveryColumns = `id, endpoint_id, coalesce(interview_id::text, ''), message_id, event_type, status, attempts,
	last_status_code, coalesce(last_error, ''), last_attempt_at, next_attempt_at, created_at`

func scanWebhookDelivery(r pgx.Row) (session.WebhookDelivery, error) {
	var d session.WebhookDelivery
	err := r.Scan(&d.ID, &d.EndpointID, &d.InterviewID, &d.MessageID, &d.EventType, &d.Status, &d.Attempts,
		&d.LastStatusCode, &d.LastError, &d.LastAttemptAt, &d.NextAttemptAt, &d.CreatedAt)
	return d, err
}

// CreateWebhookEndpoint stores an endpoint with its signing secret. The
// secret is stored as is (the worker signs with it); it is never read back
// by the API.
func (db *DB) CreateWebhookEndpoint(ctx context.Context, scope session.Scope, e session.WebhookEndpoint, secret string) (session.WebhookEndpoint, error) {
	e.ID = uuid.NewString()
	e.TenantID = scope.TenantID
	err := db.inScope(ctx, scope, func(tx pgx.Tx) error {
		return tx.QueryRow(ctx, `INSERT INTO interviews.webhook_endpoints (id, tenant_id, url, events, description, secret)
			VALUES ($1, $2, $3, $4, $5, $6) RETURNING created_at`,
			e.ID, e.TenantID, e.URL, e.Events, e.Description, secret).Scan(&e.CreatedAt)
	})
	if err != nil {
		return session.WebhookEndpoint{}, fmt.Errorf("create webhook endpoint: %w", mapError(err))
	}
	return e, nil
}

// ListWebhookEndpoints returns a page of the tenant's endpoints, newest
// first, without secrets.
func (db *DB) ListWebhookEndpoints(ctx context.Context, scope session.Scope, p session.Page) ([]session.WebhookEndpoint, string, error) {
	var items []session.WebhookEndpoint
	var next string
	err := db.inScope(ctx, scope, func(tx pgx.Tx) error {
		var err error
		items, next, err = pageQuery(ctx, tx, `SELECT `+prefixed("t.", webhookEndpointColumns)+` FROM interviews.webhook_endpoints t`,
			false, nil, p,
			func(r pgx.CollectableRow) (session.WebhookEndpoint, error) { return scanWebhookEndpoint(r) },
			func(x session.WebhookEndpoint) (time.Time, string) { return x.CreatedAt, x.ID })
		return err
	})
	if err != nil {
		return nil, "", fmt.Errorf("list webhook endpoints: %w", mapError(err))
	}
	return items, next, nil
}

// DeleteWebhookEndpoint deletes an endpoint and its deliveries; their
// pending jobs end without sending anything.
func (db *DB) DeleteWebhookEndpoint(ctx context.Context, scope session.Scope, id string) error {
	err := db.inScope(ctx, scope, func(tx pgx.Tx) error {
		tag, err := tx.Exec(ctx, `DELETE FROM interviews.webhook_endpoints WHERE id = $1`, id)
		if err != nil {
			return err
		}
		if tag.RowsAffected() == 0 {
			return pgx.ErrNoRows
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("delete webhook endpoint %s: %w", id, mapError(err))
	}
	return nil
}

// WebhookDeliveries returns a page of an endpoint's deliveries, newest
// first; an unknown endpoint is session.ENOTFOUND.
func (db *DB) WebhookDeliveries(ctx context.Context, scope session.Scope, endpointID string, p session.Page) ([]session.WebhookDelivery, string, error) {
	var items []session.WebhookDelivery
	var next string
	err := db.inScope(ctx, scope, func(tx pgx.Tx) error {
		var one int
		if err := tx.QueryRow(ctx, `SELECT 1 FROM interviews.webhook_endpoints WHERE id = $1`, endpointID).Scan(&one); err != nil {
			return err
		}
		var err error
		items, next, err = pageQuery(ctx, tx, `SELECT `+webhookDeliveryColumns+` FROM interviews.webhook_deliveries t WHERE t.endpoint_id = $1`,
			true, []any{endpointID}, p,
			func(r pgx.CollectableRow) (session.WebhookDelivery, error) { return scanWebhookDelivery(r) },
			func(x session.WebhookDelivery) (time.Time, string) { return x.CreatedAt, x.ID })
		return err
	})
	if err != nil {
		return nil, "", fmt.Errorf("list webhook deliveries of %s: %w", endpointID, mapError(err))
	}
	return items, next, nil
}

// EnqueueTx enqueues a delivery's job in the transaction that created or
// reset it.
type EnqueueTx func(ctx context.Context, tx pgx.Tx, args webhooks.DeliverArgs) error

// RetryWebhookDelivery sends a delivery again: it becomes pending and its
// job is inserted again in the same transaction (a no-op while a job of
// it is still pending). An unknown endpoint or delivery is
// session.ENOTFOUND.
func (db *DB) RetryWebhookDelivery(ctx context.Context, scope session.Scope, endpointID, deliveryID string, enqueue EnqueueTx) error {
	err := db.inScope(ctx, scope, func(tx pgx.Tx) error {
		var tenant string
		if err := tx.QueryRow(ctx, `UPDATE interviews.webhook_deliveries SET status = 'pending', next_attempt_at = now()
			WHERE id = $1 AND endpoint_id = $2 RETURNING tenant_id`, deliveryID, endpointID).Scan(&tenant); err != nil {
			return err
		}
		return enqueue(ctx, tx, webhooks.DeliverArgs{DeliveryID: deliveryID, EndpointID: endpointID, TenantID: tenant})
	})
	if err != nil {
		return fmt.Errorf("retry webhook delivery %s: %w", deliveryID, mapError(err))
	}
	return nil
}

// CreateWebhookDeliveriesTx creates, in tx, one delivery of event t about
// an interview for every enabled endpoint of the tenant subscribed to t,
// each a fresh message with body, and returns the jobs to enqueue in the
// same transaction. interviewID may be empty for an event about no
// interview.
func CreateWebhookDeliveriesTx(ctx context.Context, tx pgx.Tx, tenantID, interviewID string, t webhooks.EventType, body []byte) ([]webhooks.DeliverArgs, error) {
	endpoints, ok := endpointsFromContext(ctx, tenantID, t)
	if !ok {
		rows, err := tx.Query(ctx, `SELECT id FROM interviews.webhook_endpoints
			WHERE tenant_id = $1 AND NOT disabled AND $2 = ANY(events) ORDER BY created_at, id`, tenantID, string(t))
		if err != nil {
			return nil, fmt.Errorf("find webhook endpoints for %s: %w", t, err)
		}
		if endpoints, err = pgx.CollectRows(rows, pgx.RowTo[string]); err != nil {
			return nil, fmt.Errorf("find webhook endpoints for %s: %w", t, err)
		}
	}
	var iv *string
	if interviewID != "" {
		iv = &interviewID
	}
	out := make([]webhooks.DeliverArgs, 0, len(endpoints))
	for _, ep := range endpoints {
		msgID, err := webhooks.NewMessageID()
		if err != nil {
			return nil, err
		}
		id := uuid.NewString()
		if _, err := tx.Exec(ctx, `INSERT INTO interviews.webhook_deliveries
			(id, tenant_id, endpoint_id, interview_id, message_id, event_type, body, next_attempt_at)
			VALUES ($1, $2, $3, $4, $5, $6, $7, now())`, id, tenantID, ep, iv, msgID, string(t), body); err != nil {
			return nil, fmt.Errorf("create webhook delivery of %s: %w", t, err)
		}
		out = append(out, webhooks.DeliverArgs{DeliveryID: id, EndpointID: ep, TenantID: tenantID})
	}
	return out, nil
}

// prefetchedEndpoint is one enabled webhook endpoint of an interview's
// tenant and the events it subscribes to, read in the first round trip of
// the transaction that changes the interview (updatePipelined).
type prefetchedEndpoint struct {
	id     string
	events []string
}

// queueEndpointPrefetch queues the read of the enabled webhook endpoints of
// interview id's tenant, in the order deliveries are created.
func queueEndpointPrefetch(b *pgx.Batch, id string) {
	b.Queue(`SELECT e.id, e.events FROM interviews.webhook_endpoints e
		JOIN interviews.interview_sessions s ON s.tenant_id = e.tenant_id
		WHERE s.id = $1 AND NOT e.disabled ORDER BY e.created_at, e.id`, id)
}

// scanEndpointPrefetch reads what queueEndpointPrefetch queued.
func scanEndpointPrefetch(br pgx.BatchResults) ([]prefetchedEndpoint, error) {
	rows, err := br.Query()
	if err != nil {
		return nil, err
	}
	return pgx.CollectRows(rows, func(r pgx.CollectableRow) (prefetchedEndpoint, error) {
		var e prefetchedEndpoint
		err := r.Scan(&e.id, &e.events)
		return e, err
	})
}

// prefetchKey is the context key of a transaction's prefetched endpoints.
type prefetchKey struct{}

// prefetched is the webhook endpoints of one tenant, as read earlier in
// the transaction a hook runs in.
type prefetched struct {
	tenantID  string
	endpoints []prefetchedEndpoint
}

// withPrefetchedEndpoints hands the endpoints read in a transaction's first
// round trip to the hooks it runs: CreateWebhookDeliveriesTx then sends no
// query of its own to find them.
func withPrefetchedEndpoints(ctx context.Context, tenantID string, eps []prefetchedEndpoint) context.Context {
	return context.WithValue(ctx, prefetchKey{}, &prefetched{tenantID: tenantID, endpoints: eps})
}

// endpointsFromContext returns the ids of the tenant's enabled endpoints
// subscribed to t, in creation order, when the transaction read them
// already; false when it did not (the caller queries).
func endpointsFromContext(ctx context.Context, tenantID string, t webhooks.EventType) ([]string, bool) {
	p, ok := ctx.Value(prefetchKey{}).(*prefetched)
	if !ok || p.tenantID != tenantID {
		return nil, false
	}
	var ids []string
	for _, e := range p.endpoints {
		if slices.Contains(e.events, string(t)) {
			ids = append(ids, e.id)
		}
	}
	return ids, true
}

// WebhookFailures returns an endpoint's latest deliveries whose last
// attempt did not succeed (failed, or pending after a failed attempt), of
// any tenant: the operator CLI's view.
func (db *DB) WebhookFailures(ctx context.Context, endpointID string, limit int) ([]session.WebhookDelivery, error) {
	var out []session.WebhookDelivery
	err := db.inScope(ctx, session.SystemScope(), func(tx pgx.Tx) error {
		rows, err := tx.Query(ctx, `SELECT `+webhookDeliveryColumns+` FROM interviews.webhook_deliveries
			WHERE endpoint_id = $1 AND attempts > 0 AND status <> 'succeeded'
			ORDER BY last_attempt_at DESC NULLS LAST, id DESC LIMIT $2`, endpointID, limit)
		if err != nil {
			return err
		}
		out, err = pgx.CollectRows(rows, func(r pgx.CollectableRow) (session.WebhookDelivery, error) { return scanWebhookDelivery(r) })
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("list webhook failures of %s: %w", endpointID, mapError(err))
	}
	return out, nil
}

// WebhookStore is webhooks.Store over the database: every call runs in
// the delivery's tenant scope.
type WebhookStore struct{ db *DB }

var _ webhooks.Store = WebhookStore{}

// Webhooks returns the delivery worker's store.
func (db *DB) Webhooks() WebhookStore { return WebhookStore{db: db} }

// Delivery returns the endpoint (with its secret) and the stored message.
func (s WebhookStore) Delivery(ctx context.Context, args webhooks.DeliverArgs) (webhooks.Endpoint, webhooks.Message, error) {
	var ep webhooks.Endpoint
	var msg webhooks.Message
	err := s.db.inScope(ctx, session.TenantScope(args.TenantID), func(tx pgx.Tx) error {
		return tx.QueryRow(ctx, `SELECT e.id, e.url, e.secret, e.disabled, d.message_id, d.body
			FROM interviews.webhook_deliveries d JOIN interviews.webhook_endpoints e ON e.id = d.endpoint_id
			WHERE d.id = $1 AND d.endpoint_id = $2`, args.DeliveryID, args.EndpointID).
			Scan(&ep.ID, &ep.URL, &ep.Secret, &ep.Disabled, &msg.ID, &msg.Body)
	})
	if errors.Is(err, pgx.ErrNoRows) {
		return ep, msg, fmt.Errorf("delivery %s: %w", args.DeliveryID, webhooks.ErrDeliveryNotFound)
	}
	if err != nil {
		return ep, msg, fmt.Errorf("load webhook delivery %s: %w", args.DeliveryID, err)
	}
	return ep, msg, nil
}

// RecordAttempt counts the attempt and stores its outcome.
func (s WebhookStore) RecordAttempt(ctx context.Context, args webhooks.DeliverArgs, a webhooks.Attempt) error {
	var code *int
	if a.StatusCode != 0 {
		code = &a.StatusCode
	}
	var next *time.Time
	if !a.NextAttemptAt.IsZero() {
		next = &a.NextAttemptAt
	}
	var errText *string
	if a.Error != "" {
		e := a.Error
		if len(e) > 1000 {
			e = e[:1000]
		}
		errText = &e
	}
	err := s.db.inScope(ctx, session.TenantScope(args.TenantID), func(tx pgx.Tx) error {
		_, err := tx.Exec(ctx, `UPDATE interviews.webhook_deliveries SET attempts = attempts + 1, status = $2,
			last_status_code = $3, last_error = $4, last_attempt_at = $5, next_attempt_at = $6 WHERE id = $1`,
			args.DeliveryID, string(a.Status), code, errText, a.At, next)
		return err
	})
	if err != nil {
		return fmt.Errorf("record webhook attempt on %s: %w", args.DeliveryID, err)
	}
	return nil
}

// DisableEndpoint switches an endpoint off (it answered 410).
func (s WebhookStore) DisableEndpoint(ctx context.Context, args webhooks.DeliverArgs) error {
	err := s.db.inScope(ctx, session.TenantScope(args.TenantID), func(tx pgx.Tx) error {
		_, err := tx.Exec(ctx, `UPDATE interviews.webhook_endpoints SET disabled = true WHERE id = $1`, args.EndpointID)
		return err
	})
	if err != nil {
		return fmt.Errorf("disable webhook endpoint %s: %w", args.EndpointID, err)
	}
	return nil
}
