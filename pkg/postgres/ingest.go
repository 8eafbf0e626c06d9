package postgres

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/interviewvm/controlplane/pkg/session"
)

// Group commit of transcript batches.
//
// AppendTranscript queues its batch; ingestFlushers goroutines each take
// everything queued (up to maxFlushSegments) and commit it in one
// transaction of three pipelined round trips:
//
//  1. BEGIN, scope, and one SELECT … FOR UPDATE of every interview in the
//     flush (in id order, so concurrent flushes cannot deadlock);
//  2. one INSERT of every segment (unnest arrays, ON CONFLICT DO NOTHING)
//     that also lists the stored seqs above each acknowledgement;
//  3. one UPDATE of every advanced acknowledgement, the lifecycle writes
//     of any interview that completed, one NOTIFY naming every changed
//     interview, and COMMIT.
//
// While one flush waits for its commit (an fsync under production
// durability), the next batches queue up and go in the next flush: the
// cost of a commit is shared by everything that arrived meanwhile. A
// caller learns its result only after COMMIT returned, so a VM is never
// acknowledged for what is not durable. If a flush of several batches
// fails, each is retried alone so that one bad batch fails only itself.

// ingestFlushers is the number of flushes in flight at once.
const ingestFlushers = 2

// maxFlushSegments bounds the segments of one flush.
const maxFlushSegments = 20000

// maxNotifyPayload stays under PostgreSQL's 8000-byte NOTIFY payload limit.
const maxNotifyPayload = 7900

type appendReq struct {
	ctx   context.Context
	id    string
	segs  []session.Segment
	check func(iv *session.Interview) error
	after func(iv *session.Interview) ([]session.Event, error)
	done  chan appendRes // buffered: the flusher never blocks on it
}

type appendRes struct {
	iv  session.Interview
	err error
}

type ingester struct {
	db   *DB
	ctx  context.Context
	stop context.CancelFunc
	wg   sync.WaitGroup
	kick chan struct{}

	mu     sync.Mutex
	queue  []*appendReq
	closed bool
}

func (db *DB) startIngest() {
	ctx, stop := context.WithCancel(context.Background())
	in := &ingester{db: db, ctx: ctx, stop: stop, kick: make(chan struct{}, 1)}
	for range ingestFlushers {
		in.wg.Add(1)
		go in.run()
	}
	db.ingest = in
}

// stopIngest ends the flushers; queued batches fail.
func (db *DB) stopIngest() {
	db.ingestOnce.Do(func() {}) // none started: none will be
	in := db.ingest
	if in == nil {
		return
	}
	in.mu.Lock()
	in.closed = true
	queued := in.queue
	in.queue = nil
	in.mu.Unlock()
	in.stop()
	in.wg.Wait()
	for _, r := range queued {
		r.done <- appendRes{err: errors.New("store closed")}
	}
}

func (in *ingester) enqueue(r *appendReq) error {
	in.mu.Lock()
	if in.closed {
		in.mu.Unlock()
		return errors.New("store closed")
	}
	in.queue = append(in.queue, r)
	in.mu.Unlock()
	select {
	case in.kick <- struct{}{}:
	default: // a flusher is already due
	}
	return nil
}

// take removes up to maxFlushSegments worth of live requests from the queue.
func (in *ingester) take() []*appendReq {
	in.mu.Lock()
	defer in.mu.Unlock()
	var out []*appendReq
	n, i := 0, 0
	for ; i < len(in.queue); i++ {
		r := in.queue[i]
		if r.ctx.Err() != nil {
			continue // its caller is gone; it retries
		}
		if n > 0 && n+len(r.segs) > maxFlushSegments {
			break
		}
		out = append(out, r)
		n += len(r.segs)
	}
	in.queue = slices.Delete(in.queue, 0, i)
	if len(in.queue) > 0 {
		select {
		case in.kick <- struct{}{}: // the rest goes to another flusher
		default:
		}
	}
	return out
}

func (in *ingester) run() {
	defer in.wg.Done()
	for {
		select {
		case <-in.ctx.Done():
			return
		case <-in.kick:
		}
		reqs := in.take()
		if len(reqs) == 0 {
			continue
		}
		res, err := in.db.flush(in.ctx, reqs)
		if err != nil && len(reqs) > 1 && in.ctx.Err() == nil {
			for _, r := range reqs { // one bad batch fails only itself
				one, err := in.db.flush(in.ctx, []*appendReq{r})
				deliver([]*appendReq{r}, one, err)
			}
			continue
		}
		deliver(reqs, res, err)
	}
}

func deliver(reqs []*appendReq, res []appendRes, err error) {
	for i, r := range reqs {
		if err != nil {
			r.done <- appendRes{err: fmt.Errorf("append transcript of interview %s: %w", r.id, mapError(err))}
			continue
		}
		r.done <- res[i]
	}
}

// flush commits reqs in one transaction. A request refused by its check
// (or whose interview does not exist) gets its own error in res; err is
// for the flush as a whole.
func (db *DB) flush(ctx context.Context, reqs []*appendReq) (res []appendRes, err error) {
	res = make([]appendRes, len(reqs))
	conn, err := db.Pool.Acquire(ctx)
	if err != nil {
		return nil, err
	}
	// A connection released inside a transaction is discarded by the pool.
	defer conn.Release()
	defer func() {
		if err != nil {
			_, _ = conn.Exec(context.WithoutCancel(ctx), "ROLLBACK")
		}
	}()

	// 1. Lock every interview of the flush, once.
	ids := make([]string, 0, len(reqs))
	for _, r := range reqs {
		ids = append(ids, r.id)
	}
	slices.Sort(ids)
	ids = slices.Compact(ids)
	b := &pgx.Batch{}
	b.Queue("BEGIN")
	if err := db.queueScope(ctx, b, session.SystemScope()); err != nil {
		return nil, err
	}
	b.Queue(`SELECT `+interviewColumns+` FROM interviews.interview_sessions WHERE id = ANY($1::uuid[]) ORDER BY id FOR UPDATE`, ids)
	b.Queue(`SELECT now()`) // the inserted rows' created_at, for the appended hooks
	var created time.Time
	ivs := make(map[string]*session.Interview, len(ids))
	br := conn.SendBatch(ctx, b)
	_, err = br.Exec()
	if err == nil {
		_, err = br.Exec()
	}
	if err == nil {
		var rows pgx.Rows
		if rows, err = br.Query(); err == nil {
			for rows.Next() {
				iv, serr := scanInterview(rows)
				if serr != nil {
					err = serr
					break
				}
				ivs[iv.ID] = &iv
			}
			rows.Close()
			if err == nil {
				err = rows.Err()
			}
		}
	}
	if err == nil {
		err = br.QueryRow().Scan(&created)
	}
	if cerr := br.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return nil, err
	}

	// Checks, in arrival order; the first text of a seq wins.
	type key struct {
		id  string
		seq int64
	}
	seen := map[key]bool{}
	before := make(map[string]session.Interview, len(ivs))
	var sids []string
	var tids []string
	var seqs []int64
	var speakers, texts, items []string
	var failed []bool
	ok := make([]bool, len(reqs))
	for i, r := range reqs {
		iv, found := ivs[r.id]
		if !found {
			res[i].err = fmt.Errorf("append transcript of interview %s: %w", r.id, mapError(pgx.ErrNoRows))
			continue
		}
		if cerr := r.check(iv); cerr != nil {
			res[i].iv, res[i].err = *iv, cerr
			continue
		}
		ok[i] = true
		if _, done := before[r.id]; !done {
			before[r.id] = *iv
		}
		for _, s := range r.segs {
			if seen[key{r.id, s.Seq}] {
				continue
			}
			seen[key{r.id, s.Seq}] = true
			sids, tids, seqs = append(sids, iv.ID), append(tids, iv.TenantID), append(seqs, s.Seq)
			speakers, texts, items, failed = append(speakers, s.Speaker), append(texts, s.Text), append(items, s.ItemID), append(failed, s.Failed)
		}
	}
	if len(before) == 0 { // every batch refused: nothing to write
		_, err = conn.Exec(ctx, "COMMIT")
		return res, err
	}

	// 2. One insert of every segment; list every stored seq above each
	// acknowledgement (the rows inserted now are not visible to this
	// statement's own snapshot, hence the union). The lateral subquery
	// keeps that listing an index range scan per interview: a join would
	// let the planner scan the whole (large) table.
	ackIDs := make([]string, 0, len(before))
	acks := make([]int64, 0, len(before))
	for id, iv := range before {
		ackIDs, acks = append(ackIDs, id), append(acks, iv.AckedSeq)
	}
	rows, err := conn.Query(ctx, `WITH ins AS (
			INSERT INTO interviews.transcript_segments (session_id, tenant_id, seq, speaker, text, item_id, failed)
			SELECT s.sid, s.tid, s.seq, s.speaker, s.text, s.item_id, s.failed
			FROM unnest($1::uuid[], $2::uuid[], $3::bigint[], $4::text[], $5::text[], $6::text[], $7::boolean[])
				AS s(sid, tid, seq, speaker, text, item_id, failed)
			ON CONFLICT (session_id, seq) DO NOTHING
			RETURNING session_id, seq)
		SELECT session_id::text, seq, true FROM ins
		UNION ALL
		SELECT a.sid::text, t.seq, false FROM unnest($8::uuid[], $9::bigint[]) AS a(sid, acked)
			CROSS JOIN LATERAL (SELECT seq FROM interviews.transcript_segments
				WHERE session_id = a.sid AND seq > a.acked) t
		ORDER BY 1, 2`,
		sids, tids, seqs, speakers, texts, items, failed, ackIDs, acks)
	if err != nil {
		return nil, err
	}
	inserted := map[string]bool{}
	var stored []storedSeg // in (interview, seq) order
	var sid string
	var seq int64
	var isNew bool
	_, err = pgx.ForEachRow(rows, []any{&sid, &seq, &isNew}, func() error {
		iv := ivs[sid]
		if iv == nil {
			return fmt.Errorf("insert returned unknown interview %s", sid)
		}
		inserted[sid] = inserted[sid] || isNew
		if isNew {
			stored = append(stored, storedSeg{sid, seq})
		}
		if seq == iv.AckedSeq+1 {
			iv.AckedSeq = seq
		}
		return nil
	})
	if err != nil {
		return nil, err
	}

	// after, in arrival order, on the interview as it now stands.
	events := map[string][]session.Event{}
	for i, r := range reqs {
		if !ok[i] {
			continue
		}
		evs, aerr := r.after(ivs[r.id])
		if aerr != nil {
			return nil, aerr // fails the flush: retried alone
		}
		events[r.id] = append(events[r.id], evs...)
	}

	// 3. Acknowledgements in one statement, lifecycle writes of the
	// interviews that changed state, one NOTIFY, COMMIT.
	b = &pgx.Batch{}
	var upIDs []string
	var upAcks []int64
	var changed []string
	for id, old := range before {
		iv := ivs[id]
		if len(events[id]) > 0 {
			// A status change (an ending interview whose transcript is now
			// complete): the full row and its lifecycle events.
			queueWriteInterview(b, iv, events[id])
		} else if iv.AckedSeq != old.AckedSeq {
			upIDs, upAcks = append(upIDs, id), append(upAcks, iv.AckedSeq)
		}
		if inserted[id] || len(events[id]) > 0 {
			changed = append(changed, id)
		}
	}
	if len(upIDs) > 0 {
		b.Queue(`UPDATE interviews.interview_sessions s SET transcript_acked_seq = a.acked, updated_at = now()
			FROM unnest($1::uuid[], $2::bigint[]) AS a(id, acked) WHERE s.id = a.id`, upIDs, upAcks)
	}
	var transitioned []string
	for id, old := range before {
		if ivs[id].Status != old.Status {
			transitioned = append(transitioned, id)
		}
	}
	if len(transitioned) > 0 {
		// Rare on this path (the last segments complete an interview whose
		// VM already ended): the rows are written first, then each
		// transition's hooks run in this transaction before it commits.
		if err = conn.SendBatch(ctx, b).Close(); err != nil {
			return nil, err
		}
		slices.Sort(transitioned)
		for _, id := range transitioned {
			if err = db.runHooks(ctx, openTx{conn.Conn()}, *ivs[id], before[id].Status); err != nil {
				return nil, err
			}
		}
		b = &pgx.Batch{}
	}
	slices.Sort(changed)
	top := lastStored(stored)
	for i, id := range changed {
		if len(events[id]) == 0 { // the transcript alone changed: say up to where
			changed[i] = notifyKey(id, top[id])
		}
	}
	for _, payload := range notifyPayloads(changed) {
		b.Queue(`SELECT pg_notify($1, $2)`, notifyChannel, payload)
	}
	b.Queue("COMMIT")
	if err = conn.SendBatch(ctx, b).Close(); err != nil {
		return nil, err
	}
	db.runAppendedHooks(flushRows{ids: sids, speakers: speakers, texts: texts, items: items, seqs: seqs, failed: failed},
		stored, created, ivs)
	for i, r := range reqs {
		if ok[i] {
			res[i].iv = *ivs[r.id]
		}
	}
	return res, nil
}

// notifyPayloads joins ids with commas into payloads that fit NOTIFY.
func notifyPayloads(ids []string) []string {
	var out []string
	var cur strings.Builder
	for _, id := range ids {
		if cur.Len() > 0 && cur.Len()+1+len(id) > maxNotifyPayload {
			out = append(out, cur.String())
			cur.Reset()
		}
		if cur.Len() > 0 {
			cur.WriteByte(',')
		}
		cur.WriteString(id)
	}
	if cur.Len() > 0 {
		out = append(out, cur.String())
	}
	return out
}

// validUUID reports whether s is a UUID in its canonical text form, so that
// one malformed id cannot fail a whole flush.
func validUUID(s string) bool {
	if len(s) != 36 {
		return false
	}
	for i := range len(s) {
		c := s[i]
		switch i {
		case 8, 13, 18, 23:
			if c != '-' {
				return false
			}
		default:
			isHex := '0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F'
			if !isHex {
				return false
			}
		}
	}
	return true
}
