// Package livefeed fans an interview's new transcript segments out to every
// live stream of this replica that follows it, from memory.
//
// Per followed interview there is one reader (a goroutine that lives while
// the interview has subscribers). A change notification (Publish, fed by
// PostgreSQL LISTEN/NOTIFY) wakes it; it reads what is new once and hands
// the same update to every subscriber. Store reads per change are therefore
// independent of the number of subscribers. Each subscriber has a bounded
// buffer; one that falls behind is dropped (its channel is closed) and
// resumes with Last-Event-ID, so it never blocks the reader or the others.
// Publish never blocks, and wake-ups coalesce.
package livefeed

import (
	"context"
	"log/slog"
	"sync"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/interviewvm/controlplane/pkg/session"
)

// Source reads an interview's segments with seq above after, in seq order
// (at most limit), and the interview itself, in one snapshot.
type Source interface {
	Transcript(ctx context.Context, scope session.Scope, id string, after int64, limit int) ([]session.Segment, session.Interview, error)
}

// Page bounds the segments of one read, and so of one Update.
const Page = 1000

// DefaultBuffer is the number of updates a subscriber may fall behind by
// before it is dropped.
const DefaultBuffer = 64

// Update is what one read of the interview found: the segments above the
// reader's previous position (possibly none: a change of state) and the
// interview. More is true when the read was a full page and another update
// follows at once. Segments is shared between subscribers: read only.
type Update struct {
	Segments  []session.Segment
	Interview session.Interview
	More      bool
}

// Hub holds the readers of this replica. The zero value is not usable; use New.
type Hub struct {
	src    Source
	logger *slog.Logger
	buffer int
	reads  prometheus.Counter
	drops  prometheus.Counter

	ctx  context.Context
	stop context.CancelFunc
	wg   sync.WaitGroup

	mu      sync.Mutex
	readers map[string]*reader
	n       int
}

type reader struct {
	wake chan struct{}
	subs map[chan Update]struct{}
	last int64 // highest seq read (or the first subscriber's position)
	done bool  // removed from the hub: no more subscribers may join
}

// New returns a Hub reading from src. buffer ≤ 0 means DefaultBuffer.
// Close stops its readers.
func New(src Source, buffer int, logger *slog.Logger, reg prometheus.Registerer) *Hub {
	if buffer <= 0 {
		buffer = DefaultBuffer
	}
	ctx, stop := context.WithCancel(context.Background())
	h := &Hub{
		src: src, logger: logger, buffer: buffer, ctx: ctx, stop: stop, readers: map[string]*reader{},
		reads: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "livefeed_reads_total", Help: "Store reads by live transcript readers (one per change per followed interview).",
		}),
		drops: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "livefeed_dropped_subscribers_total", Help: "Live subscribers dropped for falling behind (they resume with Last-Event-ID).",
		}),
	}
	if reg != nil {
		reg.MustRegister(h.reads, h.drops)
	}
	return h
}

// Subscribe follows interview key from seq after: the channel receives
// every update read after the subscription began (segments at or below
// the subscriber's own position may come again: skip them by seq). The
// channel is closed when the subscriber is dropped for falling behind, when
// a read fails, or when the hub closes; the caller then ends its stream.
// The returned function ends the subscription.
func (h *Hub) Subscribe(key string, after int64) (<-chan Update, func()) {
	ch := make(chan Update, h.buffer)
	h.mu.Lock()
	if h.ctx.Err() != nil {
		h.mu.Unlock()
		close(ch)
		return ch, func() {}
	}
	r, ok := h.readers[key]
	if !ok {
		r = &reader{wake: make(chan struct{}, 1), subs: map[chan Update]struct{}{}, last: after}
		h.readers[key] = r
		h.wg.Add(1)
		go h.run(key, r)
	}
	r.subs[ch] = struct{}{}
	h.n++
	h.mu.Unlock()
	var once sync.Once
	return ch, func() {
		once.Do(func() {
			h.mu.Lock()
			defer h.mu.Unlock()
			if _, ok := r.subs[ch]; ok {
				h.removeLocked(key, r, ch)
			}
		})
	}
}

// removeLocked ends one subscription (closing its channel); the reader goes
// with its last subscriber.
func (h *Hub) removeLocked(key string, r *reader, ch chan Update) {
	delete(r.subs, ch)
	close(ch)
	h.n--
	if len(r.subs) == 0 && !r.done {
		r.done = true
		delete(h.readers, key)
		close(r.wake) // the reader returns
	}
}

// Publish wakes the reader of key; the empty key wakes every reader (after
// a lost connection, anything may have changed). It never blocks.
func (h *Hub) Publish(key string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	wake := func(r *reader) {
		select {
		case r.wake <- struct{}{}:
		default: // already pending: coalesce
		}
	}
	if key == "" {
		for _, r := range h.readers {
			wake(r)
		}
		return
	}
	if r, ok := h.readers[key]; ok {
		wake(r)
	}
}

// Subscribers returns the number of live subscriptions.
func (h *Hub) Subscribers() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.n
}

// Close stops every reader and closes every subscriber's channel.
func (h *Hub) Close() {
	h.mu.Lock()
	h.stop()
	for key, r := range h.readers {
		for ch := range r.subs {
			h.removeLocked(key, r, ch)
		}
	}
	h.mu.Unlock()
	h.wg.Wait()
}

// run is the reader of key: on every wake-up it reads what is new, once,
// and hands it to every subscriber.
func (h *Hub) run(key string, r *reader) {
	defer h.wg.Done()
	for {
		select {
		case <-h.ctx.Done():
			return
		case _, ok := <-r.wake:
			if !ok {
				return
			}
		}
		h.mu.Lock()
		last := r.last
		h.mu.Unlock()
		for more := true; more; {
			h.reads.Inc()
			segs, iv, err := h.src.Transcript(h.ctx, session.SystemScope(), key, last, Page)
			if err != nil {
				if h.ctx.Err() == nil {
					h.logger.Warn("live transcript read failed; dropping its subscribers", "session_id", key, "error", err)
				}
				h.dropAll(key, r)
				return
			}
			more = len(segs) == Page
			if len(segs) > 0 {
				last = segs[len(segs)-1].Seq
			}
			if !h.deliver(key, r, Update{Segments: segs, Interview: iv, More: more}, last) {
				return
			}
		}
	}
}

// deliver hands u to every subscriber of r, dropping the ones whose buffer
// is full; false when r has no subscriber left.
func (h *Hub) deliver(key string, r *reader, u Update, last int64) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	if r.done {
		return false
	}
	r.last = last
	for ch := range r.subs {
		select {
		case ch <- u:
		default:
			h.drops.Inc()
			h.removeLocked(key, r, ch)
		}
	}
	return !r.done
}

func (h *Hub) dropAll(key string, r *reader) {
	h.mu.Lock()
	defer h.mu.Unlock()
	for ch := range r.subs {
		h.removeLocked(key, r, ch)
	}
}
