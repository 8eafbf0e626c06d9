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
//
// Ingest is the hot write path, so the transaction is pipelined into three
// round trips: begin, scope and lock; insert and read the seqs above the
// acknowledgement; update, notify and commit.
func (db *DB) AppendTranscript(ctx context.Context, id string, segs []session.Segment,
	check func(iv *session.Interview) error,
	after func(iv *session.Interview) ([]session.Event, error)) (session.Interview, error) {
	var iv session.Interview
	conn, err := db.Pool.Acquire(ctx)
	if err != nil {
		return iv, fmt.Errorf("append transcript of interview %s: %w", id, err)
	}
	// A connection released inside a transaction is discarded by the pool,
	// whatever went wrong below.
	defer conn.Release()
	rollback := func() { _, _ = conn.Exec(context.WithoutCancel(ctx), "ROLLBACK") }
	fail := func(err error) (session.Interview, error) {
		rollback()
		return iv, fmt.Errorf("append transcript of interview %s: %w", id, mapError(err))
	}

	b := &pgx.Batch{}
	b.Queue("BEGIN")
	if err := db.queueScope(ctx, b, session.SystemScope()); err != nil {
		return iv, err
	}
	b.Queue(`SELECT `+interviewColumns+` FROM interviews.interview_sessions WHERE id = $1 FOR UPDATE`, id)
	br := conn.SendBatch(ctx, b)
	_, err = br.Exec()
	if err == nil {
		_, err = br.Exec()
	}
	if err == nil {
		iv, err = scanInterview(br.QueryRow())
	}
	if cerr := br.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fail(err)
	}
	if err := check(&iv); err != nil {
		rollback()
		return iv, err
	}
	before := iv

	n := len(segs)
	seqs, speakers, texts, items, failed := make([]int64, n), make([]string, n), make([]string, n), make([]string, n), make([]bool, n)
	for i, s := range segs {
		seqs[i], speakers[i], texts[i], items[i], failed[i] = s.Seq, s.Speaker, s.Text, s.ItemID, s.Failed
	}
	// Insert, and list every stored seq above the acknowledgement (the rows
	// inserted now are not visible to this statement's own snapshot, hence
	// the union).
	rows, err := conn.Query(ctx, `WITH ins AS (
			INSERT INTO interviews.transcript_segments (session_id, tenant_id, seq, speaker, text, item_id, failed)
			SELECT $1, $2, s.seq, s.speaker, s.text, s.item_id, s.failed
			FROM unnest($3::bigint[], $4::text[], $5::text[], $6::text[], $7::boolean[]) AS s(seq, speaker, text, item_id, failed)
			ON CONFLICT (session_id, seq) DO NOTHING
			RETURNING seq)
		SELECT seq, true FROM ins
		UNION ALL
		SELECT seq, false FROM interviews.transcript_segments WHERE session_id = $1 AND seq > $8
		ORDER BY 1`,
		iv.ID, iv.TenantID, seqs, speakers, texts, items, failed, iv.AckedSeq)
	if err != nil {
		return fail(err)
	}
	inserted, acked := false, iv.AckedSeq
	var seq int64
	var isNew bool
	_, err = pgx.ForEachRow(rows, []any{&seq, &isNew}, func() error {
		inserted = inserted || isNew
		if seq == acked+1 {
			acked = seq
		}
		return nil
	})
	if err != nil {
		return fail(err)
	}
	iv.AckedSeq = acked
	events, err := after(&iv)
	if err != nil {
		rollback()
		return iv, err
	}

	b = &pgx.Batch{}
	if iv.AckedSeq != before.AckedSeq || len(events) > 0 {
		queueWriteInterview(b, &iv, events)
	}
	if inserted || len(events) > 0 {
		b.Queue(`SELECT pg_notify($1, $2)`, notifyChannel, iv.ID)
	}
	if iv.Status != before.Status {
		// Rare on this path (the last segments complete an interview
		// whose VM already ended): the row is written first, then the
		// transition's hooks run in this transaction before it commits.
		if err := conn.SendBatch(ctx, b).Close(); err != nil {
			return fail(err)
		}
		if err := db.runHooks(ctx, openTx{conn.Conn()}, iv, before.Status); err != nil {
			return fail(err)
		}
		b = &pgx.Batch{}
	}
	b.Queue("COMMIT")
	if err := conn.SendBatch(ctx, b).Close(); err != nil {
		return fail(err)
	}
	return iv, nil
}

// Transcript returns up to limit segments of interview id with seq above
// afterSeq, in seq order, and the interview itself. It is the hot read of
// live streams, so the whole read-only transaction (begin, scope, two
// queries, commit) goes to the server in one round trip, as a pipeline.
func (db *DB) Transcript(ctx context.Context, scope session.Scope, id string, afterSeq int64, limit int) ([]session.Segment, session.Interview, error) {
	var iv session.Interview
	segs, err := db.transcript(ctx, scope, id, afterSeq, limit, &iv)
	if err != nil {
		return nil, iv, fmt.Errorf("read transcript of interview %s: %w", id, mapError(err))
	}
	if segs == nil {
		segs = []session.Segment{}
	}
	return segs, iv, nil
}

func (db *DB) transcript(ctx context.Context, scope session.Scope, id string, afterSeq int64, limit int, iv *session.Interview) ([]session.Segment, error) {
	b := &pgx.Batch{}
	b.Queue("BEGIN READ ONLY")
	if err := db.queueScope(ctx, b, scope); err != nil {
		return nil, err
	}
	b.Queue(`SELECT `+interviewColumns+` FROM interviews.interview_sessions WHERE id = $1`, id)
	b.Queue(`SELECT seq, speaker, text, item_id, failed, created_at
		FROM interviews.transcript_segments WHERE session_id = $1 AND seq > $2 ORDER BY seq LIMIT $3`, id, afterSeq, limit)
	b.Queue("COMMIT")
	br := db.Pool.SendBatch(ctx, b)
	// A connection left in a transaction is discarded by the pool.
	defer func() { _ = br.Close() }()
	for range 2 { // BEGIN, scope
		if _, err := br.Exec(); err != nil {
			return nil, err
		}
	}
	var err error
	if *iv, err = scanInterview(br.QueryRow()); err != nil {
		return nil, err
	}
	rows, err := br.Query()
	if err != nil {
		return nil, err
	}
	segs, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (session.Segment, error) {
		var s session.Segment
		err := r.Scan(&s.Seq, &s.Speaker, &s.Text, &s.ItemID, &s.Failed, &s.Created)
		return s, err
	})
	if err != nil {
		return nil, err
	}
	if _, err := br.Exec(); err != nil { // COMMIT
		return nil, err
	}
	return segs, br.Close()
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
