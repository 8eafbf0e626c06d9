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
// HeartbeatFlush the latest reports go to the store in one batch
// (RecordHeartbeats; one whose row a transcript flush holds is written by
// a later flush or batch, at most three batches late), whose answer
// refreshes the cached status: a session
// ended elsewhere is answered "end" at most one flush later, and one no
// longer live takes the full path again (which refuses it).
//
// The leader's heartbeat-timeout rule reads last_heartbeat_at as written by
// the batches, so a VM that goes silent is failed between HeartbeatTimeout
// and HeartbeatTimeout + HeartbeatFlush + the reconcile interval after its
// last heartbeat.

// beatEntry is what this replica knows of a live session.
type beatEntry struct {
	tokenHash []byte
	status    session.State
	endReason *session.EndReason
}

type beats struct {
	mu      sync.Mutex
	known   map[string]beatEntry
	pending map[string]session.HeartbeatRecord
}

func newBeats() *beats {
	return &beats{known: map[string]beatEntry{}, pending: map[string]session.HeartbeatRecord{}}
}

// remember caches a session read on the full path.
func (b *beats) remember(iv session.Interview) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if !iv.Status.Live() {
		delete(b.known, iv.ID)
		return
	}
	b.known[iv.ID] = beatEntry{tokenHash: iv.TokenHash, status: iv.Status, endReason: iv.EndReason}
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
	b.pending[id] = session.HeartbeatRecord{ID: id, At: at, Stats: vmStats(hb)}
	return e, true
}

func (b *beats) take() []session.HeartbeatRecord {
	b.mu.Lock()
	defer b.mu.Unlock()
	out := make([]session.HeartbeatRecord, 0, len(b.pending))
	for _, r := range b.pending {
		out = append(out, r)
	}
	clear(b.pending)
	return out
}

// written refreshes the cache from a batch's answer; on failure the
// reports go back unless newer ones arrived.
func (b *beats) written(batch []session.HeartbeatRecord, live map[string]session.Interview, err error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	for _, r := range batch {
		if err != nil {
			if _, newer := b.pending[r.ID]; !newer {
				b.pending[r.ID] = r
			}
			continue
		}
		iv, ok := live[r.ID]
		if !ok {
			delete(b.known, r.ID)
			continue
		}
		if _, still := b.known[r.ID]; still {
			b.known[r.ID] = beatEntry{tokenHash: iv.TokenHash, status: iv.Status, endReason: iv.EndReason}
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
	batch := s.beats.take()
	if len(batch) == 0 {
		return
	}
	live, err := s.store.RecordHeartbeats(ctx, batch)
	if err != nil {
		s.logger.Warn("writing heartbeats failed; retrying with the next batch", "heartbeats", len(batch), "error", err)
	}
	s.beats.written(batch, live, err)
}
