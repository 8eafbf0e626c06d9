package postgres

import (
	"context"
	"fmt"
	"slices"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/interviewvm/controlplane/pkg/session"
)

// RecordHeartbeats writes a batch of heartbeats in one transaction (a
// lock of the rows in id order, then one multi-row UPDATE) and returns the
// interviews that are still live, with what answering their VMs needs as
// it now stands: id, status, end reason and token hash (the other fields
// are left zero: with 10,000 VMs a batch holds 5,000 interviews a second,
// and reading them whole cost more than the update). A heartbeat of an interview that is no
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
	err := db.inScope(ctx, session.SystemScope(), func(tx pgx.Tx) error {
		// Rows are locked in id order, as transcript ingest does, so the
		// two batched writers cannot deadlock.
		if _, err := tx.Exec(ctx, `SELECT 1 FROM interviews.interview_sessions
			WHERE id = ANY($1::uuid[]) AND status IN ('provisioning', 'ready', 'in_progress', 'ending') ORDER BY id FOR UPDATE`, ids); err != nil {
			return err
		}
		rows, err := tx.Query(ctx, `UPDATE interviews.interview_sessions SET
				last_heartbeat_at = GREATEST(last_heartbeat_at, hb.h_at), vm_last_seq = hb.h_last,
				vm_buffered_segments = hb.h_buf, vm_retries = hb.h_retries, updated_at = now()
			FROM unnest($1::uuid[], $2::timestamptz[], $3::bigint[], $4::int[], $5::bigint[]) AS hb(h_id, h_at, h_last, h_buf, h_retries)
			WHERE id = hb.h_id AND status IN ('provisioning', 'ready', 'in_progress', 'ending')
			RETURNING id, status, end_reason, token_hash`, ids, ats, lasts, bufs, retries)
		if err != nil {
			return err
		}
		defer rows.Close()
		for rows.Next() {
			var iv session.Interview
			if err := rows.Scan(&iv.ID, &iv.Status, &iv.EndReason, &iv.TokenHash); err != nil {
				return err
			}
			out[iv.ID] = iv
		}
		return rows.Err()
	})
	if err != nil {
		return nil, fmt.Errorf("record %d heartbeats: %w", len(beats), mapError(err))
	}
	return out, nil
}
