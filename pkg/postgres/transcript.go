package postgres

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/interviewvm/controlplane/pkg/session"
)

// AppendTranscript stores a batch of segments of interview id,
// idempotently on (session_id, seq): a seq already stored keeps its first
// text. Before writing, check runs on the locked interview (the caller
// authenticates the VM and checks the session is live there); after, fn
// may change the interview knowing the new acknowledgement (AckedSeq, the
// highest seq up to which nothing is missing). Subscribers are notified at
// commit.
//
// Ingest is the hot write path, so it commits in groups (see ingester):
// the batches of many VMs waiting at the same moment share one
// transaction, one lock statement, one multi-row insert, one multi-row
// acknowledgement update and one NOTIFY. The returned interview (and so
// the VM's acknowledgement) is what was durably committed with the batch.
func (db *DB) AppendTranscript(ctx context.Context, id string, segs []session.Segment,
	check func(iv *session.Interview) error,
	after func(iv *session.Interview) ([]session.Event, error)) (session.Interview, error) {
	if !validUUID(id) {
		return session.Interview{}, fmt.Errorf("append transcript of interview %s: %w", id, session.Errorf(session.EINVALID, "malformed value"))
	}
	id = strings.ToLower(id) // as the interview's id reads back
	db.ingestOnce.Do(db.startIngest)
	req := &appendReq{ctx: ctx, id: id, segs: segs, check: check, after: after, done: make(chan appendRes, 1)}
	if err := db.ingest.enqueue(req); err != nil {
		return session.Interview{}, fmt.Errorf("append transcript of interview %s: %w", id, err)
	}
	select {
	case r := <-req.done:
		return r.iv, r.err
	case <-ctx.Done():
		// The batch may still commit; the VM retries and the insert is
		// idempotent.
		return session.Interview{}, fmt.Errorf("append transcript of interview %s: %w", id, ctx.Err())
	}
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
// transcript), on any controller replica, to fn, until ctx ends. upTo > 0
// says only its transcript changed, up to seq upTo; 0 that anything may
// have. It holds one dedicated connection and reconnects after a failure;
// after every (re)connection it calls fn with the empty id, meaning
// "anything may have changed", so subscribers re-read instead of missing a
// notification.
func (db *DB) Listen(ctx context.Context, fn func(id string, upTo int64)) {
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

// listenOnce delivers notifications until the connection fails. A payload
// may name several interviews, comma-separated (one NOTIFY per ingest
// flush), each an id or id:seq (see notifyKey).
func (db *DB) listenOnce(ctx context.Context, fn func(id string, upTo int64)) error {
	pc, err := db.Pool.Acquire(ctx)
	if err != nil {
		return fmt.Errorf("acquire listener connection: %w", err)
	}
	// Taken out of the pool, which opens another in its place: held for
	// good, it would leave the pool's default of 4 connections 3 for the
	// work (starts queued for one). Closed, not returned: it has a LISTEN
	// on it.
	conn := pc.Hijack()
	defer func() { _ = conn.Close(context.WithoutCancel(ctx)) }()
	if _, err := conn.Exec(ctx, "LISTEN "+notifyChannel); err != nil {
		return fmt.Errorf("listen: %w", err)
	}
	fn("", 0)
	for {
		n, err := conn.WaitForNotification(ctx)
		if err != nil {
			return fmt.Errorf("wait for notification: %w", err)
		}
		for key := range strings.SplitSeq(n.Payload, ",") {
			fn(parseNotifyKey(key))
		}
	}
}
