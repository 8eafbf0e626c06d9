package postgres

import (
	"context"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/interviewvm/controlplane/pkg/session"
)

// AppendTranscript stores a batch of segments of interview id in one
// statement, idempotently on (session_id, seq): a seq already stored keeps
// its first text. Before writing, check runs on the locked interview (the
// caller authenticates the VM and checks the session is live there); after,
// fn may change the interview knowing the new acknowledgement (AckedSeq,
// the highest seq up to which nothing is missing). Subscribers are
// notified at commit.
func (db *DB) AppendTranscript(ctx context.Context, id string, segs []session.Segment,
	check func(iv *session.Interview) error,
	after func(iv *session.Interview) ([]session.Event, error)) (session.Interview, error) {
	var iv session.Interview
	var fnErr error
	err := db.inScope(ctx, session.SystemScope(), func(tx pgx.Tx) error {
		var err error
		iv, err = scanInterview(tx.QueryRow(ctx, `SELECT `+interviewColumns+`
			FROM interviews.interview_sessions WHERE id = $1 FOR UPDATE`, id))
		if err != nil {
			return err
		}
		if err := check(&iv); err != nil {
			fnErr = err
			return err
		}
		before := iv
		n := len(segs)
		seqs, speakers, texts, items, failed := make([]int64, n), make([]string, n), make([]string, n), make([]string, n), make([]bool, n)
		for i, s := range segs {
			seqs[i], speakers[i], texts[i], items[i], failed[i] = s.Seq, s.Speaker, s.Text, s.ItemID, s.Failed
		}
		tag, err := tx.Exec(ctx, `INSERT INTO interviews.transcript_segments
			(session_id, tenant_id, seq, speaker, text, item_id, failed)
			SELECT $1, $2, s.seq, s.speaker, s.text, s.item_id, s.failed
			FROM unnest($3::bigint[], $4::text[], $5::text[], $6::text[], $7::boolean[]) AS s(seq, speaker, text, item_id, failed)
			ON CONFLICT (session_id, seq) DO NOTHING`,
			iv.ID, iv.TenantID, seqs, speakers, texts, items, failed)
		if err != nil {
			return err
		}
		// Advance the acknowledgement over the stored seqs above it.
		rows, err := tx.Query(ctx, `SELECT seq FROM interviews.transcript_segments
			WHERE session_id = $1 AND seq > $2 ORDER BY seq`, iv.ID, iv.AckedSeq)
		if err != nil {
			return err
		}
		above, err := pgx.CollectRows(rows, pgx.RowTo[int64])
		if err != nil {
			return err
		}
		acked := iv.AckedSeq
		for _, s := range above {
			if s != acked+1 {
				break
			}
			acked = s
		}
		iv.AckedSeq = acked
		events, err := after(&iv)
		if err != nil {
			fnErr = err
			return err
		}
		if iv.AckedSeq != before.AckedSeq || len(events) > 0 {
			if err := writeInterview(ctx, tx, &iv, events); err != nil {
				return err
			}
		}
		if tag.RowsAffected() > 0 || len(events) > 0 {
			_, err = tx.Exec(ctx, `SELECT pg_notify($1, $2)`, notifyChannel, iv.ID)
		}
		return err
	})
	if fnErr != nil {
		return iv, fnErr
	}
	if err != nil {
		return iv, fmt.Errorf("append transcript of interview %s: %w", id, mapError(err))
	}
	return iv, nil
}

// Transcript returns up to limit segments of interview id with seq above
// afterSeq, in seq order, and the interview itself.
func (db *DB) Transcript(ctx context.Context, scope session.Scope, id string, afterSeq int64, limit int) ([]session.Segment, session.Interview, error) {
	var segs []session.Segment
	var iv session.Interview
	err := db.inScope(ctx, scope, func(tx pgx.Tx) error {
		var err error
		iv, err = scanInterview(tx.QueryRow(ctx, `SELECT `+interviewColumns+` FROM interviews.interview_sessions WHERE id = $1`, id))
		if err != nil {
			return err
		}
		rows, err := tx.Query(ctx, `SELECT seq, speaker, text, item_id, failed, created_at
			FROM interviews.transcript_segments WHERE session_id = $1 AND seq > $2 ORDER BY seq LIMIT $3`, id, afterSeq, limit)
		if err != nil {
			return err
		}
		segs, err = pgx.CollectRows(rows, func(r pgx.CollectableRow) (session.Segment, error) {
			var s session.Segment
			err := r.Scan(&s.Seq, &s.Speaker, &s.Text, &s.ItemID, &s.Failed, &s.Created)
			return s, err
		})
		return err
	})
	if err != nil {
		return nil, iv, fmt.Errorf("read transcript of interview %s: %w", id, mapError(err))
	}
	if segs == nil {
		segs = []session.Segment{}
	}
	return segs, iv, nil
}

// Listen delivers the id of every interview that changes (state or
// transcript), on any controller replica, to fn, until ctx ends. It holds
// one dedicated connection and reconnects after a failure; after every
// (re)connection it calls fn with the empty id, meaning "anything may have
// changed", so subscribers re-read instead of missing a notification.
func (db *DB) Listen(ctx context.Context, fn func(id string)) {
	backoff := 100 * time.Millisecond
	for ctx.Err() == nil {
		err := db.listenOnce(ctx, fn)
		if ctx.Err() != nil {
			return
		}
		db.logger.Warn("interview change listener lost its connection; reconnecting", "error", err, "backoff", backoff)
		select {
		case <-ctx.Done():
			return
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, 5*time.Second)
	}
}

func (db *DB) listenOnce(ctx context.Context, fn func(id string)) error {
	conn, err := db.Pool.Acquire(ctx)
	if err != nil {
		return fmt.Errorf("acquire listener connection: %w", err)
	}
	// The connection is closed, not returned: it has a LISTEN on it.
	defer func() {
		_ = conn.Conn().Close(context.WithoutCancel(ctx))
		conn.Release()
	}()
	if _, err := conn.Exec(ctx, "LISTEN "+notifyChannel); err != nil {
		return fmt.Errorf("listen: %w", err)
	}
	fn("")
	for {
		n, err := conn.Conn().WaitForNotification(ctx)
		if err != nil {
			return fmt.Errorf("wait for notification: %w", err)
		}
		fn(n.Payload)
	}
}
