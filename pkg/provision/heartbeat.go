package provision

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"sync"
	"time"

	"github.com/interviewvm/controlplane/pkg/session"
)

// Heartbeats without a transaction each.
//
// The replica that receives a VM's heartbeat answers it from memory once
// it knows the session: the first heartbeat (or the first after the
// session changed on this replica) takes the full path, a locked read and
// write of the interview, and leaves the session's token hash and status
// here. Later ones are checked against that token hash, kept as the
// session's latest report, and answered from the cached status. Every
// HeartbeatFlush the latest reports are taken:
//
//   - a report is written (RecordHeartbeats, one batch; one whose row a
//     transcript flush holds is written by a later flush or batch, at most
//     three batches late) when the heartbeat stored for its session is
//     HeartbeatPersist older than it, when the VM's buffered segments or
//     retries changed, or when it has stayed the latest for
//     min(2 × HeartbeatInterval, HeartbeatPersist): the VM went quiet, and
//     its last heartbeat is stored exactly;
//   - the others only have their session's status read (HeartbeatStates).
//
// Either answer refreshes the cached status: a session ended elsewhere is
// answered "end" at most one flush later, and one no longer live takes the
// full path again (which refuses it). A live VM's stored heartbeat is
// never more than HeartbeatPersist + HeartbeatInterval + three flushes
// old; rewriting the wide interview row on every heartbeat was most of
// PostgreSQL's work under thousands of VMs.
//
// The leader's heartbeat-timeout rule reads last_heartbeat_at as written by
// the batches, so a VM that goes silent is failed between HeartbeatTimeout
// and HeartbeatTimeout + HeartbeatFlush + the reconcile interval after its
// last heartbeat, provided the replica that holds that heartbeat lives to
// write it; if that replica dies first, the stored heartbeat may be up to
// HeartbeatPersist older, and the VM is failed that much earlier.

// beatEntry is what this replica knows of a live session.
type beatEntry struct {
	tokenHash []byte
	status    session.State
	endReason *session.EndReason
	// stored is the latest heartbeat time this replica wrote (or read on
	// the full path), storedStats the VM's stats with it.
	stored      time.Time
	storedStats session.VMStats
}

// pendingBeat is a session's latest report not written yet.
type pendingBeat struct {
	rec  session.HeartbeatRecord
	read bool // its session's status was read since it arrived
}

type beats struct {
	mu      sync.Mutex
	known   map[string]beatEntry
	pending map[string]pendingBeat
}

func newBeats() *beats {
	return &beats{known: map[string]beatEntry{}, pending: map[string]pendingBeat{}}
}

// remember caches a session read on the full path.
func (b *beats) remember(iv session.Interview) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if !iv.Status.Live() {
		delete(b.known, iv.ID)
		return
	}
	e := beatEntry{tokenHash: iv.TokenHash, status: iv.Status, endReason: iv.EndReason, storedStats: iv.VM}
	if iv.LastHeartbeatAt != nil {
		e.stored = *iv.LastHeartbeatAt
	}
	b.known[iv.ID] = e
}

// forget drops a session whose state changed on this replica: its next
// heartbeat takes the full path.
func (b *beats) forget(id string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	delete(b.known, id)
}

// record keeps hb as the session's latest report if the session is known
// and the token matches; ok false sends the caller down the full path.
func (b *beats) record(id, token string, at time.Time, hb session.Heartbeat) (beatEntry, bool) {
	h := sha256.Sum256([]byte(token))
	b.mu.Lock()
	defer b.mu.Unlock()
	e, ok := b.known[id]
	if !ok || len(e.tokenHash) != sha256.Size || subtle.ConstantTimeCompare(h[:], e.tokenHash) != 1 {
		return beatEntry{}, false
	}
	b.pending[id] = pendingBeat{rec: session.HeartbeatRecord{ID: id, At: at, Stats: vmStats(hb)}}
	return e, true
}

// idle reports whether no report is pending. (The clock is read only
// after a report arrived: tests set it after the writer started.)
func (b *beats) idle() bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	return len(b.pending) == 0
}

// take returns, at now, the reports to write and the sessions whose status
// only is to be read (see the rules above). persist 0 writes every report.
// Reports not written stay pending until a newer one replaces them or
// they are written.
func (b *beats) take(now time.Time, persist, quiet time.Duration) (write []session.HeartbeatRecord, read []string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	for id, p := range b.pending {
		e, known := b.known[id]
		r := p.rec
		due := persist <= 0 || !known || r.At.Sub(e.stored) >= persist ||
			r.Stats.BufferedSegments != e.storedStats.BufferedSegments || r.Stats.Retries != e.storedStats.Retries ||
			now.Sub(r.At) >= quiet
		switch {
		case due:
			write = append(write, r)
			delete(b.pending, id)
		case !p.read:
			read = append(read, id)
			p.read = true
			b.pending[id] = p
		}
	}
	return write, read
}

// written refreshes the cache from a batch's answer; on failure the
// reports go back unless newer ones arrived.
func (b *beats) written(batch []session.HeartbeatRecord, live map[string]session.HeartbeatState, err error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	for _, r := range batch {
		if err != nil {
			if _, newer := b.pending[r.ID]; !newer {
				b.pending[r.ID] = pendingBeat{rec: r}
			}
			continue
		}
		st, ok := live[r.ID]
		if !ok {
			delete(b.known, r.ID)
			continue
		}
		if e, still := b.known[r.ID]; still {
			e.tokenHash, e.status, e.endReason = st.TokenHash, st.Status, st.EndReason
			if r.At.After(e.stored) {
				e.stored, e.storedStats = r.At, r.Stats
			}
			b.known[r.ID] = e
		}
	}
}

// refreshed refreshes the cache from a read of the sessions ids; on
// failure their reports are read again at the next flush.
func (b *beats) refreshed(ids []string, live map[string]session.HeartbeatState, err error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	for _, id := range ids {
		if err != nil {
			if p, ok := b.pending[id]; ok {
				p.read = false
				b.pending[id] = p
			}
			continue
		}
		st, ok := live[id]
		if !ok {
			delete(b.known, id)
			continue
		}
		if e, still := b.known[id]; still {
			e.tokenHash, e.status, e.endReason = st.TokenHash, st.Status, st.EndReason
			b.known[id] = e
		}
	}
}

func vmStats(hb session.Heartbeat) session.VMStats {
	return session.VMStats{LastSeq: max(hb.LastSeq, 0), BufferedSegments: max(hb.BufferedSegments, 0), Retries: max(hb.Retries, 0)}
}

func heartbeatAnswer(status session.State, endReason *session.EndReason) session.HeartbeatAnswer {
	if status == session.StateEnding {
		reason := session.ReasonEndedByUser
		if endReason != nil {
			reason = *endReason
		}
		return session.HeartbeatAnswer{Action: session.ActionEnd, Reason: reason}
	}
	return session.HeartbeatAnswer{Action: session.ActionContinue}
}

// flushBeats writes the latest reports every HeartbeatFlush until ctx
// ends, then once more.
func (s *Service) flushBeats(ctx context.Context) {
	t := time.NewTicker(s.cfg.HeartbeatFlush)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
			s.writeBeats(fctx)
			cancel()
			return
		case <-t.C:
			s.writeBeats(ctx)
		}
	}
}

func (s *Service) writeBeats(ctx context.Context) {
	quiet := 2 * s.cfg.HeartbeatInterval
	if s.cfg.HeartbeatPersist > 0 {
		quiet = min(quiet, s.cfg.HeartbeatPersist)
	}
	if s.beats.idle() {
		return
	}
	write, read := s.beats.take(s.now(), s.cfg.HeartbeatPersist, quiet)
	if len(write) > 0 {
		live, err := s.store.RecordHeartbeats(ctx, write)
		if err != nil {
			s.logger.Warn("writing heartbeats failed; retrying with the next batch", "heartbeats", len(write), "error", err)
		}
		s.beats.written(write, live, err)
	}
	if len(read) > 0 {
		live, err := s.store.HeartbeatStates(ctx, read)
		if err != nil {
			s.logger.Warn("reading the state of heartbeating sessions failed; reading again with the next batch", "sessions", len(read), "error", err)
		}
		s.beats.refreshed(read, live, err)
	}
}
