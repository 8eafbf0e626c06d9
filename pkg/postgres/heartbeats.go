package postgres

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/interviewvm/controlplane/pkg/session"
)

// maxHeartbeatDeferrals is how many batches in a row a heartbeat may be
// put off because its row was busy; the next batch waits for the row.
const maxHeartbeatDeferrals = 2

// deferredBeats are heartbeats whose rows another transaction (a
// transcript flush) held when their batch was written: they go with the
// next batch.
type deferredBeats struct {
	mu    sync.Mutex
	beats map[string]deferredBeat
}

type deferredBeat struct {
	rec   session.HeartbeatRecord
	times int // batches it was put off
}

// takeFor removes and returns the deferred heartbeats of the interviews
// ivs: a transcript flush holding their rows writes them.
func (d *deferredBeats) takeFor(ivs map[string]*session.Interview) map[string]deferredBeat {
	d.mu.Lock()
	defer d.mu.Unlock()
	var out map[string]deferredBeat
	for id, b := range d.beats {
		if _, ok := ivs[id]; ok {
			if out == nil {
				out = map[string]deferredBeat{}
			}
			out[id] = b
			delete(d.beats, id)
		}
	}
	return out
}

// putBack returns heartbeats a failed flush did not write, unless newer
// ones were deferred meanwhile.
func (d *deferredBeats) putBack(beats map[string]deferredBeat) {
	d.mu.Lock()
	defer d.mu.Unlock()
	for id, b := range beats {
		if _, newer := d.beats[id]; !newer {
			d.beats[id] = b
		}
	}
}

// queueHeartbeatUpdate queues the write of beats to the rows that are
// still live.
func queueHeartbeatUpdate(b *pgx.Batch, beats []session.HeartbeatRecord) {
	n := len(beats)
	ids, ats, lasts, bufs, retries := make([]string, 0, n), make([]time.Time, 0, n), make([]int64, 0, n), make([]int32, 0, n), make([]int64, 0, n)
	for _, b := range beats {
		ids, ats = append(ids, b.ID), append(ats, b.At)
		lasts, bufs, retries = append(lasts, b.Stats.LastSeq), append(bufs, int32(min(b.Stats.BufferedSegments, 1<<31-1))), append(retries, b.Stats.Retries)
	}
	b.Queue(`UPDATE interviews.interview_sessions SET
			last_heartbeat_at = GREATEST(last_heartbeat_at, hb.h_at), vm_last_seq = hb.h_last,
			vm_buffered_segments = hb.h_buf, vm_retries = hb.h_retries, updated_at = now()
		FROM unnest($1::uuid[], $2::timestamptz[], $3::bigint[], $4::int[], $5::bigint[]) AS hb(h_id, h_at, h_last, h_buf, h_retries)
		WHERE id = hb.h_id AND status IN ('provisioning', 'ready', 'in_progress', 'ending')`, ids, ats, lasts, bufs, retries)
}

// RecordHeartbeats writes a batch of heartbeats and returns the state of
// the interviews that are still live, as they now stand: the caller
// refreshes what it answers VMs from them. A heartbeat of an interview
// that is no longer live (or does not exist) writes nothing and is not
// returned. Heartbeats are not lifecycle changes: no NOTIFY, no hooks.
//
// The rows are locked with SKIP LOCKED, then updated in one statement.
// Waiting in id order for a row a transcript flush holds would also hold
// back every flush that needs a row already locked here: a convoy once a
// batch. A heartbeat whose row was busy is returned as the interview reads
// now (it is live) and put off: the next transcript flush that locks its
// row writes it, or else the next batch. After maxHeartbeatDeferrals
// batches that found the row busy and no flush took it, the batch waits
// for the row in a second transaction (in id order, as ingest locks, so
// the two batched writers cannot deadlock).
func (db *DB) RecordHeartbeats(ctx context.Context, beats []session.HeartbeatRecord) (map[string]session.HeartbeatState, error) {
	out := make(map[string]session.HeartbeatState, len(beats))
	times := map[string]int{}
	byID := make(map[string]session.HeartbeatRecord, len(beats))
	db.deferred.mu.Lock()
	for id, d := range db.deferred.beats {
		byID[id], times[id] = d.rec, d.times
	}
	clear(db.deferred.beats)
	db.deferred.mu.Unlock()
	for _, b := range beats {
		if !validUUID(b.ID) {
			continue
		}
		id := strings.ToLower(b.ID)
		if old, ok := byID[id]; !ok || !b.At.Before(old.At) {
			b.ID = id
			byID[id] = b
		}
	}
	if len(byID) == 0 {
		return out, nil
	}
	all := make([]session.HeartbeatRecord, 0, len(byID))
	for _, b := range byID {
		all = append(all, b)
	}
	slices.SortFunc(all, func(a, b session.HeartbeatRecord) int { return strings.Compare(a.ID, b.ID) })

	busy, err := db.writeHeartbeats(ctx, "FOR NO KEY UPDATE SKIP LOCKED", all, out)
	if err != nil {
		// Put back what was put off before: the caller re-queues the rest.
		db.deferred.mu.Lock()
		for id, n := range times {
			if _, newer := db.deferred.beats[id]; !newer {
				db.deferred.beats[id] = deferredBeat{rec: byID[id], times: n}
			}
		}
		db.deferred.mu.Unlock()
		return nil, fmt.Errorf("record %d heartbeats: %w", len(all), mapError(err))
	}
	var wait []session.HeartbeatRecord
	db.deferred.mu.Lock()
	for _, b := range all {
		if !busy[b.ID] {
			continue
		}
		if times[b.ID] >= maxHeartbeatDeferrals {
			wait = append(wait, b)
			continue
		}
		db.deferred.beats[b.ID] = deferredBeat{rec: b, times: times[b.ID] + 1}
	}
	db.deferred.mu.Unlock()
	if len(wait) > 0 {
		if _, err := db.writeHeartbeats(ctx, "FOR NO KEY UPDATE", wait, out); err != nil {
			return nil, fmt.Errorf("record %d heartbeats: %w", len(wait), mapError(err))
		}
	}
	return out, nil
}

// heartbeatStateColumns are what a session.HeartbeatState is scanned from.
const heartbeatStateColumns = `id, status, end_reason, token_hash`

// HeartbeatStates returns the state of the interviews of ids that are
// live: for heartbeats held in memory and not written, so that what their
// VMs are answered follows changes made elsewhere. It reads without a
// lock and writes nothing.
func (db *DB) HeartbeatStates(ctx context.Context, ids []string) (map[string]session.HeartbeatState, error) {
	out := make(map[string]session.HeartbeatState, len(ids))
	uids := make([][16]byte, 0, len(ids))
	for _, id := range ids {
		if !validUUID(id) {
			continue
		}
		u, _, err := uuidBytes(id, id)
		if err != nil {
			return nil, err
		}
		uids = append(uids, u)
	}
	if len(uids) == 0 {
		return out, nil
	}
	err := db.inScope(ctx, session.SystemScope(), func(tx pgx.Tx) error {
		rows, err := tx.Query(ctx, `SELECT `+heartbeatStateColumns+` FROM interviews.interview_sessions
			WHERE id = ANY($1::uuid[]) AND status IN ('provisioning', 'ready', 'in_progress', 'ending')`, uids)
		if err != nil {
			return err
		}
		defer rows.Close()
		for rows.Next() {
			var st session.HeartbeatState
			if err := rows.Scan(&st.ID, &st.Status, &st.EndReason, &st.TokenHash); err != nil {
				return err
			}
			out[st.ID] = st
		}
		return rows.Err()
	})
	if err != nil {
		return nil, fmt.Errorf("read the state of %d interviews: %w", len(uids), mapError(err))
	}
	return out, nil
}

// heartbeatUpdate writes heartbeats ($1 ids, $2 times, $3 last seqs, $4
// buffered segments, $5 retries) to rows the caller has locked.
const heartbeatUpdate = `UPDATE interviews.interview_sessions SET
		last_heartbeat_at = GREATEST(last_heartbeat_at, hb.h_at), vm_last_seq = hb.h_last,
		vm_buffered_segments = hb.h_buf, vm_retries = hb.h_retries, updated_at = now()
	FROM unnest($1::uuid[], $2::timestamptz[], $3::bigint[], $4::int[], $5::bigint[]) AS hb(h_id, h_at, h_last, h_buf, h_retries)
	WHERE id = hb.h_id`

// writeHeartbeats locks the live rows of beats (sorted by id) with the
// lock clause lock, updates them and adds them to out, in one
// transaction. Live rows it could not lock (SKIP LOCKED) are read without
// a lock, added to out, and returned as busy.
//
// Each statement takes only the ids it acts on, so that every row is
// found by one probe of the primary key. The planner guesses ten rows for
// an unnest of a parameter: an update joined to the whole batch's unnest
// and also filtered by a second id array once ran as a nested loop over
// the unnest for each row, quadratic in the batch (15 s for 8,000
// heartbeats, holding every row it had locked meanwhile).
func (db *DB) writeHeartbeats(ctx context.Context, lock string, beats []session.HeartbeatRecord, out map[string]session.HeartbeatState) (map[string]bool, error) {
	ids := make([][16]byte, 0, len(beats))
	byID := make(map[string]session.HeartbeatRecord, len(beats))
	for _, b := range beats {
		u, _, err := uuidBytes(b.ID, b.ID)
		if err != nil {
			return nil, err
		}
		ids = append(ids, u)
		byID[b.ID] = b
	}
	var busy map[string]bool
	err := db.inScope(ctx, session.SystemScope(), func(tx pgx.Tx) error {
		busy = nil
		rows, err := tx.Query(ctx, `SELECT id::text FROM interviews.interview_sessions
			WHERE id = ANY($1::uuid[]) AND status IN ('provisioning', 'ready', 'in_progress', 'ending') ORDER BY id `+lock, ids)
		if err != nil {
			return err
		}
		locked, err := pgx.CollectRows(rows, pgx.RowTo[string])
		if err != nil {
			return err
		}
		scan := func(rows pgx.Rows, mark bool) error {
			defer rows.Close()
			for rows.Next() {
				var st session.HeartbeatState
				if err := rows.Scan(&st.ID, &st.Status, &st.EndReason, &st.TokenHash); err != nil {
					return err
				}
				out[st.ID] = st
				if mark {
					if busy == nil {
						busy = map[string]bool{}
					}
					busy[st.ID] = true
				}
			}
			return rows.Err()
		}
		if len(locked) > 0 {
			n := len(locked)
			uids, ats, lasts, bufs, retries := make([][16]byte, 0, n), make([]time.Time, 0, n), make([]int64, 0, n), make([]int32, 0, n), make([]int64, 0, n)
			for _, id := range locked {
				b := byID[id]
				u, _, err := uuidBytes(id, id)
				if err != nil {
					return err
				}
				uids, ats = append(uids, u), append(ats, b.At)
				lasts, bufs, retries = append(lasts, b.Stats.LastSeq), append(bufs, int32(min(b.Stats.BufferedSegments, 1<<31-1))), append(retries, b.Stats.Retries)
			}
			// The rows are locked and live: no status check needed.
			rows, err = tx.Query(ctx, heartbeatUpdate+` RETURNING `+heartbeatStateColumns, uids, ats, lasts, bufs, retries)
			if err != nil {
				return err
			}
			if err := scan(rows, false); err != nil {
				return err
			}
		}
		if len(locked) == len(ids) {
			return nil
		}
		// Live rows not locked: another transaction holds them.
		got := make(map[string]bool, len(locked))
		for _, id := range locked {
			got[id] = true
		}
		var rest [][16]byte
		for i, b := range beats {
			if !got[b.ID] {
				rest = append(rest, ids[i])
			}
		}
		rows, err = tx.Query(ctx, `SELECT `+heartbeatStateColumns+` FROM interviews.interview_sessions
			WHERE id = ANY($1::uuid[]) AND status IN ('provisioning', 'ready', 'in_progress', 'ending')`, rest)
		if err != nil {
			return err
		}
		return scan(rows, true)
	})
	return busy, err
}
