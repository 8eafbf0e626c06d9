package transcript

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"sync"
	"time"

	"github.com/interviewvm/controlplane/pkg/session"
)

// Defaults of OutboxConfig.
const (
	DefaultMaxBatch     = 50
	DefaultBatchDelay   = 250 * time.Millisecond
	DefaultRetryWaitMin = 250 * time.Millisecond
	DefaultRetryWaitMax = 5 * time.Second
	DefaultMaxBuffered  = 10000
	DefaultPostTimeout  = 15 * time.Second
)

// ErrFull is returned by Add when more than MaxBuffered segments await
// acknowledgement. The segments were kept all the same: the caller should
// stop producing more (end the interview) and flush.
var ErrFull = errors.New("transcript outbox is full: the controller has not acknowledged segments for too long")

// ErrStopped is returned by Flush when the outbox's Run has returned.
var ErrStopped = errors.New("transcript outbox stopped")

// Poster delivers one batch and returns the highest contiguous seq the
// receiver holds. controlclient.Client implements it.
type Poster interface {
	Transcript(ctx context.Context, batch session.TranscriptBatch) (session.TranscriptAck, error)
}

// OutboxConfig configures an Outbox.
type OutboxConfig struct {
	// Poster receives the batches. Required.
	Poster Poster
	// Logger receives retry warnings; nil discards them.
	Logger *slog.Logger
	// MaxBatch bounds a batch's segments. Default 50.
	MaxBatch int
	// BatchDelay is the longest a segment waits for company before it is
	// posted (flushing skips the wait). Default 250 ms.
	BatchDelay time.Duration
	// RetryWaitMin and RetryWaitMax bound the exponential backoff (with
	// up to 25% jitter) after a failed post. Defaults 250 ms and 5 s.
	RetryWaitMin time.Duration
	RetryWaitMax time.Duration
	// MaxBuffered is how many unacknowledged segments make Add report
	// ErrFull. Default 10000 (far beyond one interview).
	MaxBuffered int
	// PostTimeout bounds one post, the poster's own retries included.
	// Default 15 s.
	PostTimeout time.Duration
	// Permanent reports whether a post error will never go away (the
	// session is over, the token was refused): Run then returns it. Nil
	// means every error is worth retrying.
	Permanent func(error) bool
}

// OutboxStats is what heartbeats report about the outbox.
type OutboxStats struct {
	// LastSeq is the highest seq added.
	LastSeq int64
	// AckedSeq is the highest seq the controller acknowledged.
	AckedSeq int64
	// Buffered counts the segments awaiting acknowledgement.
	Buffered int
	// Retries counts failed posts.
	Retries int64
}

// Outbox keeps every unacknowledged segment and posts them to the
// controller, lowest seq first, until they are acknowledged. Add and
// Flush are safe for concurrent use; Run delivers and must run while
// segments are expected.
type Outbox struct {
	cfg OutboxConfig
	log *slog.Logger

	mu      sync.Mutex
	pending []entry // unacknowledged, by seq
	lastSeq int64
	acked   int64
	retries int64
	hurry   int   // Flush calls waiting
	err     error // why Run returned
	stopped bool
	// wake is signalled (capacity 1) when there is news for Run.
	wake chan struct{}
	// changed is closed and replaced whenever acked or stopped changes.
	changed chan struct{}
}

type entry struct {
	seg   session.Segment
	added time.Time
}

// NewOutbox returns an empty outbox.
func NewOutbox(cfg OutboxConfig) *Outbox {
	if cfg.MaxBatch <= 0 {
		cfg.MaxBatch = DefaultMaxBatch
	}
	if cfg.BatchDelay <= 0 {
		cfg.BatchDelay = DefaultBatchDelay
	}
	if cfg.RetryWaitMin <= 0 {
		cfg.RetryWaitMin = DefaultRetryWaitMin
	}
	if cfg.RetryWaitMax < cfg.RetryWaitMin {
		cfg.RetryWaitMax = max(DefaultRetryWaitMax, cfg.RetryWaitMin)
	}
	if cfg.MaxBuffered <= 0 {
		cfg.MaxBuffered = DefaultMaxBuffered
	}
	if cfg.PostTimeout <= 0 {
		cfg.PostTimeout = DefaultPostTimeout
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Outbox{cfg: cfg, log: log, wake: make(chan struct{}, 1), changed: make(chan struct{})}
}

// Add queues segments for delivery. Segments must come in seq order; one
// whose seq is not above every seq added before is ignored. It returns
// ErrFull when more than MaxBuffered segments await acknowledgement (the
// segments are kept).
func (o *Outbox) Add(segs ...session.Segment) error {
	if len(segs) == 0 {
		return nil
	}
	now := time.Now()
	o.mu.Lock()
	for _, s := range segs {
		if s.Seq <= o.lastSeq {
			o.log.Warn("transcript segment out of sequence; ignored", "seq", s.Seq, "last_seq", o.lastSeq)
			continue
		}
		o.pending = append(o.pending, entry{seg: s, added: now})
		o.lastSeq = s.Seq
	}
	full := len(o.pending) > o.cfg.MaxBuffered
	o.mu.Unlock()
	o.signal()
	if full {
		return ErrFull
	}
	return nil
}

// Stats returns the outbox's counters.
func (o *Outbox) Stats() OutboxStats {
	o.mu.Lock()
	defer o.mu.Unlock()
	return OutboxStats{LastSeq: o.lastSeq, AckedSeq: o.acked, Buffered: len(o.pending), Retries: o.retries}
}

// Flush waits until every segment added so far is acknowledged, skipping
// the batching delay. It returns early when ctx ends or Run has returned,
// saying how many segments are left.
func (o *Outbox) Flush(ctx context.Context) error {
	o.mu.Lock()
	target := o.lastSeq
	o.hurry++
	o.mu.Unlock()
	defer func() {
		o.mu.Lock()
		o.hurry--
		o.mu.Unlock()
	}()
	o.signal()
	for {
		o.mu.Lock()
		acked, stopped, runErr, changed, left := o.acked, o.stopped, o.err, o.changed, len(o.pending)
		o.mu.Unlock()
		switch {
		case acked >= target:
			return nil
		case stopped:
			if runErr != nil {
				return fmt.Errorf("flush transcript (%d segments unacknowledged): %w: %w", left, ErrStopped, runErr)
			}
			return fmt.Errorf("flush transcript (%d segments unacknowledged): %w", left, ErrStopped)
		}
		select {
		case <-changed:
		case <-ctx.Done():
			return fmt.Errorf("flush transcript (%d segments unacknowledged, acked %d of %d): %w", left, acked, target, ctx.Err())
		}
	}
}

// Run delivers segments until ctx ends (it then returns nil) or a post
// fails permanently (it returns that error). Call it once.
func (o *Outbox) Run(ctx context.Context) error {
	err := o.run(ctx)
	o.mu.Lock()
	o.stopped, o.err = true, err
	o.notifyLocked()
	o.mu.Unlock()
	return err
}

func (o *Outbox) run(ctx context.Context) error {
	wait := o.cfg.RetryWaitMin
	for {
		batch, delay := o.next()
		if batch == nil || delay > 0 {
			if !o.sleep(ctx, batch != nil, delay) {
				return nil
			}
			continue
		}
		pctx, cancel := context.WithTimeout(ctx, o.cfg.PostTimeout)
		ack, err := o.cfg.Poster.Transcript(pctx, session.TranscriptBatch{Segments: batch})
		cancel()
		select {
		case <-ctx.Done():
			return nil // stopping: the outcome of this post does not matter
		default:
		}
		if err == nil && ack.AckedSeq < batch[0].Seq {
			// Nothing of the batch was taken: retry later, not at once.
			err = fmt.Errorf("controller acknowledged seq %d after a batch starting at seq %d", ack.AckedSeq, batch[0].Seq)
		}
		if err != nil {
			if o.cfg.Permanent != nil && o.cfg.Permanent(err) {
				return fmt.Errorf("post transcript: %w", err)
			}
			o.mu.Lock()
			o.retries++
			o.mu.Unlock()
			d := jitter(wait)
			o.log.Warn("posting transcript failed; will retry", "error", err, "first_seq", batch[0].Seq,
				"segments", len(batch), "wait", d.String())
			t := time.NewTimer(d)
			select {
			case <-ctx.Done():
				t.Stop()
				return nil
			case <-t.C:
			}
			wait = min(2*wait, o.cfg.RetryWaitMax)
			continue
		}
		wait = o.cfg.RetryWaitMin
		o.ack(ack.AckedSeq)
	}
}

// sleep waits for news, or for delay when timed; it reports false when
// ctx ended.
func (o *Outbox) sleep(ctx context.Context, timed bool, delay time.Duration) bool {
	var timer <-chan time.Time
	if timed {
		t := time.NewTimer(delay)
		defer t.Stop()
		timer = t.C
	}
	select {
	case <-ctx.Done():
		return false
	case <-o.wake:
	case <-timer:
	}
	return true
}

// next returns the batch to post now and how long to wait before posting
// it: nil when nothing is pending; a positive delay while the oldest
// segment may still wait for company.
func (o *Outbox) next() ([]session.Segment, time.Duration) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if len(o.pending) == 0 {
		return nil, 0
	}
	n := min(len(o.pending), o.cfg.MaxBatch)
	batch := make([]session.Segment, n)
	for i := range n {
		batch[i] = o.pending[i].seg
	}
	if o.hurry > 0 || len(o.pending) >= o.cfg.MaxBatch {
		return batch, 0
	}
	return batch, time.Until(o.pending[0].added.Add(o.cfg.BatchDelay))
}

// ack drops the segments up to seq.
func (o *Outbox) ack(seq int64) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if seq <= o.acked {
		return
	}
	o.acked = seq
	i := 0
	for i < len(o.pending) && o.pending[i].seg.Seq <= seq {
		i++
	}
	o.pending = append(o.pending[:0:0], o.pending[i:]...)
	o.notifyLocked()
}

// notifyLocked wakes Flush callers; o.mu is held.
func (o *Outbox) notifyLocked() {
	close(o.changed)
	o.changed = make(chan struct{})
}

// signal wakes Run without blocking.
func (o *Outbox) signal() {
	select {
	case o.wake <- struct{}{}:
	default:
	}
}

// jitter adds up to 25% to d.
func jitter(d time.Duration) time.Duration {
	if j := int64(d / 4); j > 0 {
		return d + time.Duration(rand.Int64N(j))
	}
	return d
}
