package webhooks

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/riverqueue/river"
	"github.com/riverqueue/river/rivertype"
)

// Queue is the River queue deliveries run on.
const Queue = "webhooks"

// maxAttemptsCeiling is River's MaxAttempts for delivery jobs. The worker
// ends a job itself when the retry schedule runs out (it records the
// delivery as failed first), so River's own limit only has to stay out of
// the way.
const maxAttemptsCeiling = 1000

// DeliverArgs is the job of delivering one stored message to one
// endpoint. It names the delivery, not its payload: the body and the
// message id live with the delivery, so every attempt sends the same
// bytes under the same webhook-id, and erasing an interview erases its
// payloads without touching the queue.
type DeliverArgs struct {
	// DeliveryID identifies the delivery (one message to one endpoint).
	DeliveryID string `json:"delivery_id"`
	// EndpointID is the endpoint it goes to.
	EndpointID string `json:"endpoint_id"`
	// TenantID owns both; the store reads them in that tenant's scope.
	TenantID string `json:"tenant_id"`
}

// Kind names the job kind in river_job.
func (DeliverArgs) Kind() string { return "webhook_deliver" }

// InsertOpts puts deliveries on Queue and makes a delivery's job unique
// while it is pending or running (a second insert for the same delivery,
// e.g. a manual retry racing an automatic one, is a no-op; once the job
// has completed or been cancelled a new one can be inserted).
func (DeliverArgs) InsertOpts() river.InsertOpts {
	return river.InsertOpts{
		Queue:       Queue,
		MaxAttempts: maxAttemptsCeiling,
		UniqueOpts: river.UniqueOpts{
			ByArgs: true,
			ByState: []rivertype.JobState{
				rivertype.JobStateAvailable, rivertype.JobStatePending, rivertype.JobStateRetryable,
				rivertype.JobStateRunning, rivertype.JobStateScheduled,
			},
		},
	}
}

// DeliveryStatus is a delivery's state as the API shows it.
type DeliveryStatus string

// The delivery states.
const (
	StatusPending   DeliveryStatus = "pending"
	StatusSucceeded DeliveryStatus = "succeeded"
	StatusFailed    DeliveryStatus = "failed"
)

// Attempt is what the worker records after each attempt.
type Attempt struct {
	// Number is the job's 1-based attempt number. A manual retry inserts
	// a new job, which starts at 1 again: the store should count a
	// delivery's attempts itself (one per RecordAttempt).
	Number int
	// Status is the delivery's status after it.
	Status DeliveryStatus
	// StatusCode is the receiver's HTTP status, 0 when none was received.
	StatusCode int
	// Error says why the attempt did not succeed; empty on success.
	Error string
	// At is when the attempt ended.
	At time.Time
	// NextAttemptAt is when the next attempt is due; zero unless pending.
	NextAttemptAt time.Time
}

// ErrDeliveryNotFound is returned by a Store when the delivery or its
// endpoint no longer exists (endpoint deleted, interview erased): the job
// ends without sending anything.
var ErrDeliveryNotFound = errors.New("webhook delivery not found")

// Store is what the worker needs from where endpoints and deliveries are
// kept. Every method is scoped to args.TenantID.
type Store interface {
	// Delivery returns the endpoint (with its secret) and the stored
	// message of a delivery, or an error wrapping ErrDeliveryNotFound.
	Delivery(ctx context.Context, args DeliverArgs) (Endpoint, Message, error)
	// RecordAttempt stores the result of an attempt on the delivery.
	RecordAttempt(ctx context.Context, args DeliverArgs, a Attempt) error
	// DisableEndpoint switches the endpoint off after it answered 410.
	DisableEndpoint(ctx context.Context, args DeliverArgs) error
}

// DeliverWorker works DeliverArgs jobs. River never works one job twice
// at once; a job left running by a dead process is rescued and worked
// again (after the client's RescueStuckJobsAfter), so a receiver may see a
// message twice and must deduplicate by webhook-id, as Standard Webhooks
// expects.
type DeliverWorker struct {
	river.WorkerDefaults[DeliverArgs]

	store     Store
	deliverer *Deliverer
	schedule  RetrySchedule
	metrics   *Metrics
	logger    *slog.Logger
	now       func() time.Time
}

// NewDeliverWorker returns the worker; metrics may be nil. Register it
// with river.AddWorker(workers, w).
func NewDeliverWorker(store Store, deliverer *Deliverer, schedule RetrySchedule, metrics *Metrics, logger *slog.Logger) *DeliverWorker {
	return &DeliverWorker{store: store, deliverer: deliverer, schedule: schedule, metrics: metrics, logger: logger, now: time.Now}
}

// Timeout bounds a whole job: one attempt plus the store's reads and
// writes. The jobs client's RescueStuckJobsAfter must exceed it.
func (w *DeliverWorker) Timeout(*river.Job[DeliverArgs]) time.Duration {
	return w.deliverer.Timeout() + 20*time.Second
}

// NextRetry follows the retry schedule: the job's Attempt is the attempt
// that just failed.
func (w *DeliverWorker) NextRetry(job *river.Job[DeliverArgs]) time.Time {
	return w.schedule.next(w.now(), job.Attempt)
}

// Work makes one delivery attempt and records its result.
func (w *DeliverWorker) Work(ctx context.Context, job *river.Job[DeliverArgs]) error {
	args := job.Args
	log := w.logger.With("delivery_id", args.DeliveryID, "endpoint_id", args.EndpointID, "attempt", job.Attempt)
	ep, msg, err := w.store.Delivery(ctx, args)
	if errors.Is(err, ErrDeliveryNotFound) {
		w.count("dropped")
		log.Info("webhook delivery dropped: it no longer exists", "err", err)
		return river.JobCancel(err)
	}
	if err != nil {
		return fmt.Errorf("load webhook delivery %s: %w", args.DeliveryID, err)
	}
	if ep.Disabled {
		w.count("dropped")
		err := fmt.Errorf("webhook endpoint %s is disabled", args.EndpointID)
		if rerr := w.record(ctx, args, Attempt{Number: job.Attempt, Status: StatusFailed, Error: err.Error(), At: w.now()}); rerr != nil {
			return rerr
		}
		return river.JobCancel(err)
	}

	res := w.deliverer.Deliver(ctx, ep, msg)
	a := Attempt{Number: job.Attempt, StatusCode: res.StatusCode, At: w.now()}
	if res.Err != nil {
		a.Error = res.Err.Error()
	}
	switch res.Outcome {
	case OutcomeSuccess:
		a.Status = StatusSucceeded
		if err := w.record(ctx, args, a); err != nil {
			// Delivered but not recorded: retrying resends the same
			// webhook-id, which receivers deduplicate.
			return err
		}
		w.count("succeeded")
		return nil
	case OutcomeGone:
		if err := w.store.DisableEndpoint(ctx, args); err != nil {
			return fmt.Errorf("disable webhook endpoint %s: %w", args.EndpointID, err)
		}
		a.Status = StatusFailed
		if err := w.record(ctx, args, a); err != nil {
			return err
		}
		w.count("endpoint_gone")
		log.Warn("webhook endpoint answered 410 and is disabled")
		return river.JobCancel(res.Err)
	default:
		delay, more := w.schedule.Delay(job.Attempt)
		if !more {
			a.Status = StatusFailed
			if err := w.record(ctx, args, a); err != nil {
				return err
			}
			w.count("failed")
			log.Warn("webhook delivery failed: retry schedule exhausted", "err", res.Err)
			return river.JobCancel(res.Err)
		}
		a.Status = StatusPending
		a.NextAttemptAt = a.At.Add(delay)
		if err := w.record(ctx, args, a); err != nil {
			return errors.Join(res.Err, err)
		}
		w.count("retrying")
		log.Info("webhook attempt failed; will retry", "err", res.Err, "status_code", res.StatusCode, "next_attempt_at", a.NextAttemptAt)
		return res.Err
	}
}

func (w *DeliverWorker) record(ctx context.Context, args DeliverArgs, a Attempt) error {
	if err := w.store.RecordAttempt(ctx, args, a); err != nil {
		return fmt.Errorf("record webhook attempt %d of delivery %s: %w", a.Number, args.DeliveryID, err)
	}
	return nil
}

func (w *DeliverWorker) count(outcome string) {
	if w.metrics != nil {
		w.metrics.deliveries.WithLabelValues(outcome).Inc()
	}
}
