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
//
// On the replica that stored them, new segments need no read at all: the
// store hands what it just committed to Appended, which passes it on when
// it directly follows what the subscribers were given (the notification
// that arrives later names the seq it covers, and Publish then skips the
// read). Other replicas learn of the change by the notification.
package livefeed

import (
	"context"
	"encoding/json"
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

// Update is what one read of the interview found (or what the store just
// committed): the segments above the reader's previous position (possibly
// none: a change of state) and the interview. More is true when the read
// was a full page and another update follows at once. JSON holds each
// segment's JSON encoding, in the order of Segments, made once for every
// subscriber. Segments and JSON are shared between subscribers: read only.
type Update struct {
	Segments  []session.Segment
	JSON      [][]byte
	Interview session.Interview
	More      bool
}

// newUpdate encodes segs once for every subscriber.
func newUpdate(segs []session.Segment, iv session.Interview, more bool) Update {
	u := Update{Segments: segs, Interview: iv, More: more, JSON: make([][]byte, len(segs))}
	for i, s := range segs {
		u.JSON[i], _ = json.Marshal(s) // a Segment always encodes
	}
	return u
}

// after returns u without the segments at or below seq.
func (u Update) after(seq int64) Update {
	i := 0
	for i < len(u.Segments) && u.Segments[i].Seq <= seq {
		i++
	}
	u.Segments, u.JSON = u.Segments[i:], u.JSON[i:]
	return u
}

// Hub holds the readers of this replica. The zero value is not usable; use New.
type Hub struct {
	src     Source
	logger  *slog.Logger
	buffer  int
	reads   prometheus.Counter
	drops   prometheus.Counter
	handoff prometheus.Counter

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
	last int64 // highest seq delivered (or the first subscriber's position)
	// status, endReason and more are the last delivered update's: an
	// update with no new segment and the same state is not sent (unless
	// the last one announced more).
	status    session.State
	endReason session.EndReason
	more      bool
	sent      bool // an update was delivered
	done      bool // removed from the hub: no more subscribers may join
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
		handoff: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "livefeed_handoffs_total", Help: "Committed segments passed to live subscribers by the store of this replica, without a read.",
		}),
	}
	if reg != nil {
		reg.MustRegister(h.reads, h.drops, h.handoff)
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
// a lost connection, anything may have changed). upTo > 0 says only the
// transcript changed, up to seq upTo: a reader that already delivered it
// (handed over by Appended) is not woken. It never blocks.
func (h *Hub) Publish(key string, upTo int64) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if key == "" {
		for _, r := range h.readers {
			r.wakeUp()
		}
		return
	}
	if r, ok := h.readers[key]; ok && (upTo <= 0 || r.last < upTo) {
		r.wakeUp()
	}
}

func (r *reader) wakeUp() {
	select {
	case r.wake <- struct{}{}:
	default: // already pending: coalesce
	}
}

// Appended hands segments just committed for interview key (in seq order,
// with the interview as that commit left it) to its subscribers without a
// store read, when they directly follow what the reader delivered;
// otherwise (a gap, or no segment) the reader is woken to read. It never
// blocks: it is called by the store's committing goroutine.
func (h *Hub) Appended(key string, segs []session.Segment, iv session.Interview) {
	h.mu.Lock()
	r, ok := h.readers[key]
	last := int64(0)
	if ok {
		last = r.last
	}
	h.mu.Unlock()
	if !ok {
		return // nobody follows it here
	}
	i := 0
	for i < len(segs) && segs[i].Seq <= last {
		i++
	}
	segs = segs[i:]
	contiguous := len(segs) > 0 && segs[0].Seq == last+1
	for j := 1; contiguous && j < len(segs); j++ {
		contiguous = segs[j].Seq == segs[j-1].Seq+1
	}
	if i > 0 && len(segs) == 0 {
		return // a read got there first
	}
	var u Update
	if contiguous {
		u = newUpdate(segs, iv, false) // encoded before taking the lock
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	switch {
	case r.done: // its last subscriber left
	case !contiguous || r.last != last: // a gap, or it moved meanwhile: the reader reads
		r.wakeUp()
	default:
		h.handoff.Inc()
		h.deliverLocked(key, r, u)
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
			u := newUpdate(segs, iv, more)
			h.mu.Lock()
			alive := !r.done
			if alive {
				h.deliverLocked(key, r, u)
				alive = !r.done
			}
			h.mu.Unlock()
			if !alive {
				return
			}
		}
	}
}

// deliverLocked hands u, less what the subscribers were already given, to
// every subscriber of r, dropping the ones whose buffer is full. An update
// with nothing new (no segment, the same state) is not sent.
func (h *Hub) deliverLocked(key string, r *reader, u Update) {
	u = u.after(r.last)
	var reason session.EndReason
	if u.Interview.EndReason != nil {
		reason = *u.Interview.EndReason
	}
	if len(u.Segments) == 0 && !u.More && !r.more && r.sent && u.Interview.Status == r.status && reason == r.endReason {
		return
	}
	if n := len(u.Segments); n > 0 {
		r.last = u.Segments[n-1].Seq
	}
	r.status, r.endReason, r.more, r.sent = u.Interview.Status, reason, u.More, true
	for ch := range r.subs {
		select {
		case ch <- u:
		default:
			h.drops.Inc()
			h.removeLocked(key, r, ch)
		}
	}
}

func (h *Hub) dropAll(key string, r *reader) {
	h.mu.Lock()
	defer h.mu.Unlock()
	for ch := range r.subs {
		h.removeLocked(key, r, ch)
	}
}
