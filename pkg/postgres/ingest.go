package postgres

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/interviewvm/controlplane/pkg/session"
)

// Group commit of transcript batches.
//
// AppendTranscript queues its batch; ingestFlushers goroutines each take
// everything queued (up to maxFlushSegments) and commit it in one
// transaction of two pipelined round trips:
//
//  1. BEGIN, scope, one SELECT … FOR NO KEY UPDATE of every interview in
//     the flush (in id order, so concurrent flushes cannot deadlock), and
//     one listing of the seqs stored above each acknowledgement;
//  2. one plain INSERT of every new segment (unnest arrays), one UPDATE of
//     every advanced acknowledgement, the lifecycle writes of any
//     interview that completed, one NOTIFY naming every changed interview,
//     and COMMIT.
//
// Between the two, the flush drops duplicates (retries) and computes each
// new acknowledgement itself: it holds the row lock of every interview
// it writes, and only a flush holding that lock inserts segments, so what
// it read in 1 is exactly what is stored. The insert needs no ON CONFLICT
// arbitration (a speculative insertion per row) and no RETURNING.
//
// While one flush waits for its commit (an fsync under production
// durability), the next batches queue up and go in the next flush: the
// cost of a commit is shared by everything that arrived meanwhile. A
// caller learns its result only after COMMIT returned, so a VM is never
// acknowledged for what is not durable. If a flush of several batches
// fails, each is retried alone so that one bad batch fails only itself.

// ingestFlushers is the number of flushes in flight at once. Each has a
// connection of its own (the ingester's pool), so that a burst of
// transcript batches never takes the connections of other requests, and
// other requests never hold back a flush.
const ingestFlushers = 4

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
	pool *pgxpool.Pool // ingestFlushers connections
	ctx  context.Context
	stop context.CancelFunc
	wg   sync.WaitGroup
	kick chan struct{}
	err  error // its pool could not be made: every append fails with it

	mu     sync.Mutex
	queue  []*appendReq
	closed bool
}

func (db *DB) startIngest() {
	ctx, stop := context.WithCancel(context.Background())
	in := &ingester{db: db, ctx: ctx, stop: stop, kick: make(chan struct{}, 1)}
	cfg := db.Pool.Config()
	cfg.MaxConns, cfg.MinConns = ingestFlushers, 0
	// The flush's statements take arrays whose contents vary, so
	// PostgreSQL's plan cache kept choosing a custom plan and planned every
	// statement of every flush again (7% of the server's CPU in the
	// ingest, profiled); their generic plans are index scans by id.
	if cfg.ConnConfig.RuntimeParams == nil {
		cfg.ConnConfig.RuntimeParams = map[string]string{}
	}
	cfg.ConnConfig.RuntimeParams["plan_cache_mode"] = "force_generic_plan"
	// The flush sends its columns pre-encoded (ingestarray.go).
	prev := cfg.AfterConnect
	cfg.AfterConnect = func(ctx context.Context, conn *pgx.Conn) error {
		if prev != nil {
			if err := prev(ctx, conn); err != nil {
				return err
			}
		}
		return registerWireArrays(ctx, conn)
	}
	pool, err := pgxpool.NewWithConfig(ctx, cfg) // connects lazily
	if err != nil {
		in.err = fmt.Errorf("transcript ingest pool: %w", err)
		stop()
		db.ingest = in
		return
	}
	in.pool = pool
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
	if in.pool != nil {
		in.pool.Close()
	}
	for _, r := range queued {
		r.done <- appendRes{err: errors.New("store closed")}
	}
}

func (in *ingester) enqueue(r *appendReq) error {
	if in.err != nil {
		return in.err
	}
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
		res, err := in.db.flush(in.ctx, in.pool, reqs)
		if err != nil && len(reqs) > 1 && in.ctx.Err() == nil {
			for _, r := range reqs { // one bad batch fails only itself
				one, err := in.db.flush(in.ctx, in.pool, []*appendReq{r})
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
func (db *DB) flush(ctx context.Context, pool *pgxpool.Pool, reqs []*appendReq) (res []appendRes, err error) {
	res = make([]appendRes, len(reqs))
	conn, err := pool.Acquire(ctx)
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

	// 1. Lock every interview of the flush, once, and list the seqs
	// already stored above each acknowledgement.
	ids := make([]string, 0, len(reqs))
	for _, r := range reqs {
		ids = append(ids, r.id)
	}
	slices.Sort(ids)
	ids = slices.Compact(ids)
	bids := make([][16]byte, len(ids))
	for i, id := range ids {
		if bids[i], _, err = uuidBytes(id, id); err != nil {
			return nil, err
		}
	}
	ivs, stored, created, err := db.lockForIngest(ctx, conn.Conn(), bids)
	if err != nil {
		return nil, err
	}
	// Heartbeats a batch put off because a flush held their rows: this
	// flush holds them now and writes them.
	beats := db.deferred.takeFor(ivs)
	if len(beats) > 0 {
		defer func() {
			if err != nil {
				db.deferred.putBack(beats)
			}
		}()
	}

	// Checks, in arrival order. A seq at or below the acknowledgement, one
	// already stored above it, or one earlier in this flush is a duplicate
	// (a retry) and is dropped here: the first text of a seq wins. What
	// is left cannot conflict with a stored row, because every insert of
	// segments happens in a flush holding its interview's row lock.
	before := make(map[string]session.Interview, len(ivs))
	// Ids go to the server as binary uuids: pgx encodes a string into a
	// uuid[] only after its binary attempt failed, and that failure
	// formats the whole array into an error message first (a quarter of
	// the controller's CPU in the flush, profiled).
	total, textBytes := 0, 0
	for _, r := range reqs {
		total += len(r.segs)
		for _, seg := range r.segs {
			textBytes += len(seg.Speaker) + len(seg.Text) + len(seg.ItemID)
		}
	}
	sids, tids, seqs := newArray(oidUUID, 20*total), newArray(oidUUID, 20*total), newArray(oidInt8, 12*total)
	speakers, texts, items := newArray(oidText, 16*total), newArray(oidText, 4*total+textBytes), newArray(oidText, 8*total)
	failed := newArray(oidBool, 5*total)
	inserted := map[string]bool{}
	handed := map[string][]session.Segment{} // for the appended hooks
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
		sid, tid, perr := uuidBytes(iv.ID, iv.TenantID)
		if perr != nil {
			return nil, perr
		}
		have := stored[r.id]
		for _, s := range r.segs {
			if s.Seq <= iv.AckedSeq || have[s.Seq] {
				continue
			}
			if have == nil {
				have = map[int64]bool{}
				stored[r.id] = have
			}
			have[s.Seq] = true
			inserted[r.id] = true
			s.Created = created // the row's created_at: the transaction's now()
			handed[r.id] = append(handed[r.id], s)
			sids.uuid(sid)
			tids.uuid(tid)
			seqs.int8(s.Seq)
			speakers.text(s.Speaker)
			texts.text(s.Text)
			items.text(s.ItemID)
			failed.bool(s.Failed)
		}
	}
	if len(before) == 0 { // every batch refused: nothing to write
		db.deferred.putBack(beats)
		_, err = conn.Exec(ctx, "COMMIT")
		return res, err
	}
	// The acknowledgement moves up over every seq now stored without a gap.
	for id := range before {
		iv, have := ivs[id], stored[id]
		for have[iv.AckedSeq+1] {
			iv.AckedSeq++
		}
	}

	// after, in arrival order, on the interview as it will be committed.
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

	// 2. One insert of every new segment, the acknowledgements in one
	// statement, the lifecycle writes of the interviews that changed
	// state, one NOTIFY and COMMIT: one round trip.
	b := &pgx.Batch{}
	if seqs.n > 0 {
		b.Queue(`INSERT INTO interviews.transcript_segments (session_id, tenant_id, seq, speaker, text, item_id, failed)
			SELECT * FROM unnest($1::uuid[], $2::uuid[], $3::bigint[], $4::text[], $5::text[], $6::text[], $7::boolean[])`,
			sids.done(), tids.done(), seqs.done(), speakers.done(), texts.done(), items.done(), failed.done())
	}
	var upIDs [][16]byte
	var upAcks []int64
	var changed []string
	for id, old := range before {
		iv := ivs[id]
		if len(events[id]) > 0 {
			// A status change (an ending interview whose transcript is now
			// complete): the full row and its lifecycle events.
			queueWriteInterview(b, iv, events[id])
		} else if iv.AckedSeq != old.AckedSeq {
			u, _, perr := uuidBytes(id, id)
			if perr != nil {
				return nil, perr
			}
			upIDs, upAcks = append(upIDs, u), append(upAcks, iv.AckedSeq)
		}
		if inserted[id] || len(events[id]) > 0 {
			changed = append(changed, id)
		}
	}
	if len(upIDs) > 0 {
		b.Queue(`UPDATE interviews.interview_sessions s SET transcript_acked_seq = a.acked, updated_at = now()
			FROM unnest($1::uuid[], $2::bigint[]) AS a(id, acked) WHERE s.id = a.id`, upIDs, upAcks)
	}
	if len(beats) > 0 {
		recs := make([]session.HeartbeatRecord, 0, len(beats))
		for _, hb := range beats {
			recs = append(recs, hb.rec)
		}
		queueHeartbeatUpdate(b, recs)
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
	for i, id := range changed {
		if len(events[id]) == 0 { // the transcript alone changed: say up to where
			changed[i] = notifyKey(id, lastSeq(handed[id]))
		}
	}
	for _, payload := range notifyPayloads(changed) {
		b.Queue(`SELECT pg_notify($1, $2)`, notifyChannel, payload)
	}
	b.Queue("COMMIT")
	if err = conn.SendBatch(ctx, b).Close(); err != nil {
		return nil, err
	}
	db.runAppendedHooks(handed, ivs)
	for i, r := range reqs {
		if ok[i] {
			res[i].iv = *ivs[r.id]
		}
	}
	return res, nil
}

// lockForIngest begins the flush's transaction, locks the interviews ids
// (sorted: concurrent flushes lock in the same order and cannot deadlock)
// and lists, per interview, the seqs stored above its acknowledgement; one
// round trip. The lock is FOR NO KEY UPDATE: it serialises the flushes and
// lifecycle changes of an interview, and does not block the foreign-key
// checks of rows inserted elsewhere (session events).
func (db *DB) lockForIngest(ctx context.Context, conn *pgx.Conn, ids [][16]byte) (map[string]*session.Interview, map[string]map[int64]bool, time.Time, error) {
	b := &pgx.Batch{}
	b.Queue("BEGIN")
	if err := db.queueScope(ctx, b, session.SystemScope()); err != nil {
		return nil, nil, time.Time{}, err
	}
	b.Queue(`SELECT `+interviewColumns+` FROM interviews.interview_sessions WHERE id = ANY($1::uuid[]) ORDER BY id FOR NO KEY UPDATE`, ids)
	// Read after the lock (a new snapshot under READ COMMITTED), so it
	// sees every flush committed before this one. OFFSET 0 keeps the
	// subquery an index range scan per interview: flattened into a join,
	// the planner may scan the whole (large) table.
	b.Queue(`SELECT s.id::text, t.seq FROM interviews.interview_sessions s
		CROSS JOIN LATERAL (SELECT seq FROM interviews.transcript_segments
			WHERE session_id = s.id AND seq > s.transcript_acked_seq OFFSET 0) t
		WHERE s.id = ANY($1::uuid[])`, ids)
	b.Queue(`SELECT now()`) // the inserted rows' created_at, for the appended hooks
	var created time.Time
	ivs := make(map[string]*session.Interview, len(ids))
	stored := make(map[string]map[int64]bool, len(ids))
	br := conn.SendBatch(ctx, b)
	_, err := br.Exec()
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
		var rows pgx.Rows
		if rows, err = br.Query(); err == nil {
			var id string
			var seq int64
			_, err = pgx.ForEachRow(rows, []any{&id, &seq}, func() error {
				if stored[id] == nil {
					stored[id] = map[int64]bool{}
				}
				stored[id][seq] = true
				return nil
			})
		}
	}
	if err == nil {
		err = br.QueryRow().Scan(&created)
	}
	if cerr := br.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return nil, nil, created, err
	}
	return ivs, stored, created, nil
}

// uuidBytes parses two uuids into their binary form.
func uuidBytes(a, b string) ([16]byte, [16]byte, error) {
	ua, err := uuid.Parse(a)
	if err != nil {
		return ua, ua, fmt.Errorf("interview id %q: %w", a, err)
	}
	ub, err := uuid.Parse(b)
	if err != nil {
		return ua, ub, fmt.Errorf("tenant id %q: %w", b, err)
	}
	return ua, ub, nil
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
