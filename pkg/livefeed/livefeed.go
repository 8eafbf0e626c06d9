// Package livefeed fans change notifications out to the subscribers of one
// key (an interview id). A notification carries no data: it wakes the
// subscriber, who re-reads what it follows from the database. Waking never
// blocks, and wake-ups coalesce, so a slow subscriber cannot hold back the
// publisher (transcript ingest) or other subscribers.
package livefeed

import "sync"

// Hub is a set of subscriptions by key. The zero value is not usable; use New.
type Hub struct {
	mu   sync.Mutex
	subs map[string]map[chan struct{}]struct{}
	n    int
}

// New returns an empty Hub.
func New() *Hub { return &Hub{subs: map[string]map[chan struct{}]struct{}{}} }

// Subscribe returns a channel that receives a value after each change of
// key (several changes may arrive as one), and a function that ends the
// subscription.
func (h *Hub) Subscribe(key string) (<-chan struct{}, func()) {
	ch := make(chan struct{}, 1)
	h.mu.Lock()
	set, ok := h.subs[key]
	if !ok {
		set = map[chan struct{}]struct{}{}
		h.subs[key] = set
	}
	set[ch] = struct{}{}
	h.n++
	h.mu.Unlock()
	var once sync.Once
	return ch, func() {
		once.Do(func() {
			h.mu.Lock()
			defer h.mu.Unlock()
			delete(set, ch)
			h.n--
			if len(set) == 0 && h.subs[key] != nil && len(h.subs[key]) == 0 {
				delete(h.subs, key)
			}
		})
	}
}

// Publish wakes the subscribers of key; the empty key wakes everyone
// (after a lost connection, anything may have changed).
func (h *Hub) Publish(key string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	wake := func(set map[chan struct{}]struct{}) {
		for ch := range set {
			select {
			case ch <- struct{}{}:
			default: // already pending: coalesce
			}
		}
	}
	if key == "" {
		for _, set := range h.subs {
			wake(set)
		}
		return
	}
	wake(h.subs[key])
}

// Subscribers returns the number of live subscriptions.
func (h *Hub) Subscribers() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.n
}
