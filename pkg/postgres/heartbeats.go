package postgres

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/interviewvm/controlplane/pkg/session"
)

// RecordHeartbeats writes a batch of heartbeats (a lock of the rows in id
// order, then one multi-row UPDATE; a second transaction for rows another
// transaction held) and returns the
// interviews that are still live, as they now stand: the caller refreshes
// what it answers VMs from them. A heartbeat of an interview that is no
// longer live (or does not exist) writes nothing and is not returned.
// Heartbeats are not lifecycle changes: no NOTIFY, no hooks.
func (db *DB) RecordHeartbeats(ctx context.Context, beats []session.HeartbeatRecord) (map[string]session.Interview, error) {
	out := make(map[string]session.Interview, len(beats))
	if len(beats) == 0 {
		return out, nil
	}
	beats = slices.Clone(beats)
	slices.SortFunc(beats, func(a, b session.HeartbeatRecord) int {
		switch {
		case a.ID < b.ID:
			return -1
		case a.ID > b.ID:
			return 1
		}
		return 0
	})
	n := len(beats)
	ids, ats, lasts, bufs, retries := make([]string, 0, n), make([]time.Time, 0, n), make([]int64, 0, n), make([]int32, 0, n), make([]int64, 0, n)
	for _, b := range beats {
		if !validUUID(b.ID) {
			continue
		}
		ids, ats = append(ids, b.ID), append(ats, b.At)
		lasts, bufs, retries = append(lasts, b.Stats.LastSeq), append(bufs, int32(min(b.Stats.BufferedSegments, 1<<31-1))), append(retries, b.Stats.Retries)
	}
	// First the rows nobody holds (SKIP LOCKED): waiting in id order for a
	// row a transcript flush holds would also hold back every flush that
	// needs a row already locked here, once a second. Then, in a second
	// transaction, the rows that were busy, waiting for them in id order
	// (as transcript ingest locks), so the two batched writers cannot
	// deadlock.
	busy, err := db.writeHeartbeats(ctx, "FOR NO KEY UPDATE SKIP LOCKED", ids, ats, lasts, bufs, retries, out)
	if err == nil && len(busy) > 0 {
		var lasts2, retries2 []int64
		sel := make([]string, 0, len(busy))
		ats2, bufs2 := make([]time.Time, 0, len(busy)), make([]int32, 0, len(busy))
		for i, id := range ids {
			if busy[strings.ToLower(id)] {
				sel, ats2, bufs2 = append(sel, id), append(ats2, ats[i]), append(bufs2, bufs[i])
				lasts2, retries2 = append(lasts2, lasts[i]), append(retries2, retries[i])
			}
		}
		_, err = db.writeHeartbeats(ctx, "FOR NO KEY UPDATE", sel, ats2, lasts2, bufs2, retries2, out)
	}
	if err != nil {
		return nil, fmt.Errorf("record %d heartbeats: %w", len(beats), mapError(err))
	}
	return out, nil
}

// writeHeartbeats locks the live rows of ids (in id order, with the lock
// clause lock), updates them and adds them to out, in one transaction. It
// returns the ids that were live but not locked (skipped).
func (db *DB) writeHeartbeats(ctx context.Context, lock string, ids []string, ats []time.Time, lasts []int64, bufs []int32, retries []int64, out map[string]session.Interview) (map[string]bool, error) {
	var busy map[string]bool
	err := db.inScope(ctx, session.SystemScope(), func(tx pgx.Tx) error {
		rows, err := tx.Query(ctx, `SELECT id::text FROM interviews.interview_sessions
			WHERE id = ANY($1::uuid[]) AND status IN ('provisioning', 'ready', 'in_progress', 'ending') ORDER BY id `+lock, ids)
		if err != nil {
			return err
		}
		locked, err := pgx.CollectRows(rows, pgx.RowTo[string])
		if err != nil {
			return err
		}
		rows, err = tx.Query(ctx, `UPDATE interviews.interview_sessions SET
				last_heartbeat_at = GREATEST(last_heartbeat_at, hb.h_at), vm_last_seq = hb.h_last,
				vm_buffered_segments = hb.h_buf, vm_retries = hb.h_retries, updated_at = now()
			FROM unnest($1::uuid[], $2::timestamptz[], $3::bigint[], $4::int[], $5::bigint[]) AS hb(h_id, h_at, h_last, h_buf, h_retries)
			WHERE id = hb.h_id AND id = ANY($6::uuid[]) AND status IN ('provisioning', 'ready', 'in_progress', 'ending')
			RETURNING `+interviewColumns, ids, ats, lasts, bufs, retries, locked)
		if err != nil {
			return err
		}
		defer rows.Close()
		for rows.Next() {
			iv, err := scanInterview(rows)
			if err != nil {
				return err
			}
			out[iv.ID] = iv
		}
		if err := rows.Err(); err != nil {
			return err
		}
		if len(locked) == len(ids) {
			return nil
		}
		// Live rows not locked: held by another transaction.
		rows, err = tx.Query(ctx, `SELECT id::text FROM interviews.interview_sessions
			WHERE id = ANY($1::uuid[]) AND NOT id = ANY($2::uuid[]) AND status IN ('provisioning', 'ready', 'in_progress', 'ending')`, ids, locked)
		if err != nil {
			return err
		}
		skipped, err := pgx.CollectRows(rows, pgx.RowTo[string])
		if err != nil {
			return err
		}
		busy = make(map[string]bool, len(skipped))
		for _, id := range skipped {
			busy[id] = true
		}
		return nil
	})
	return busy, err
}
