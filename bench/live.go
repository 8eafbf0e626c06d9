package bench

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/interviewvm/controlplane/pkg/session"
)

// LiveConfig sets case 4 up.
type LiveConfig struct {
	// Interviews live, each followed by Subscribers/Interviews streams.
	Interviews, Subscribers int
	// PostEvery is each VM's period between one-segment posts.
	PostEvery time.Duration
	Duration  time.Duration
}

// Live is case 4's result.
type Live struct {
	Interviews, Subscribers int
	PostEvery               time.Duration
	Posts                   int64
	// Latency runs from the VM sending its post to a subscriber reading
	// the segment's event; Post is the post's own round trip (until the
	// VM has the acknowledgement), the floor a subscriber cannot beat by
	// much: the segment is visible only once committed.
	Latency, Post Summary
	// AfterAck runs from the VM holding its post's acknowledgement to a
	// subscriber reading the segment (negative: the subscriber had it
	// first): what lies between the commit and the subscriber's read.
	AfterAck            Summary
	Delivered, Expected int64
	Duplicates          int64
	Errors              int64
	// Pool is the controller's connection pool during the posts;
	// TxPerPost the database's committed transactions per post.
	Pool      PoolStats
	TxPerPost float64
	// ReadsPerPost is the controller's live-feed store reads
	// (interview_livefeed_reads_total) per post: it must not grow with
	// the subscribers.
	ReadsPerPost         float64
	FirstError           string
	SubscribersConnected int
}

// liveReadsMetric counts the live feed's store reads (pkg/livefeed).
const liveReadsMetric = "interview_livefeed_reads_total"

// liveKey is one posted segment.
type liveKey struct {
	id  string
	seq int64
}

// RunLive follows cfg.Interviews live interviews with cfg.Subscribers SSE
// streams (GET /transcript/stream, spread evenly) while each interview's
// VM posts one segment every PostEvery; it measures each delivery.
func (e *Env) RunLive(ctx context.Context, cfg LiveConfig) (Live, error) {
	res := Live{Interviews: cfg.Interviews, Subscribers: cfg.Subscribers, PostEvery: cfg.PostEvery}
	f, vms, ts, ids, err := e.liveSessions(ctx, "live", cfg.Interviews, min(10, cfg.Interviews), nil)
	if err != nil {
		return res, err
	}
	defer f.Close()

	var sent sync.Map  // liveKey → time.Time
	var acked sync.Map // liveKey → time.Time
	var reads struct { // every delivery: compared with its ack at the end
		mu   sync.Mutex
		keys []liveKey
		at   []time.Time
	}
	var lat, post Samples
	var delivered, dups, errs atomic.Int64
	var firstErr atomic.Value
	fail := func(err error) {
		errs.Add(1)
		firstErr.CompareAndSwap(nil, err.Error())
	}

	// Subscribers.
	subCtx, stopSubs := context.WithCancel(ctx)
	defer stopSubs()
	subHC := &http.Client{Transport: newTransport(cfg.Subscribers + 8)}
	type target struct{ tok, id string }
	var targets []target
	for i, t := range ts {
		for _, id := range ids[i] {
			targets = append(targets, target{t.Token, id})
		}
	}
	var connected atomic.Int64
	var subs sync.WaitGroup
	for i := range cfg.Subscribers {
		tg := targets[i%len(targets)]
		subs.Go(func() {
			req, _ := http.NewRequestWithContext(subCtx, "GET", f.API.Base+"/v1/interviews/"+tg.id+"/transcript/stream", nil)
			req.Header.Set("Authorization", "Bearer "+tg.tok)
			req.Header.Set("Accept", "text/event-stream")
			resp, err := subHC.Do(req)
			if err != nil {
				if subCtx.Err() == nil {
					fail(fmt.Errorf("subscribe: %w", err))
				}
				return
			}
			defer resp.Body.Close()
			if resp.StatusCode != http.StatusOK {
				fail(fmt.Errorf("subscribe: status %d", resp.StatusCode))
				return
			}
			connected.Add(1)
			r := bufio.NewReaderSize(resp.Body, 16<<10)
			var last int64
			for {
				line, err := r.ReadSlice('\n')
				if err != nil {
					return
				}
				data, ok := bytes.CutPrefix(line, []byte("data: "))
				if !ok {
					continue
				}
				now := time.Now()
				var seg struct {
					Seq int64 `json:"seq"`
				}
				if json.Unmarshal(data, &seg) != nil || seg.Seq == 0 {
					continue
				}
				if seg.Seq <= last {
					dups.Add(1)
					continue
				}
				last = seg.Seq
				if t, ok := sent.Load(liveKey{tg.id, seg.Seq}); ok {
					lat.Add(now.Sub(t.(time.Time)))
					delivered.Add(1)
					reads.mu.Lock()
					reads.keys, reads.at = append(reads.keys, liveKey{tg.id, seg.Seq}), append(reads.at, now)
					reads.mu.Unlock()
				}
			}
		})
	}
	if err := waitFor(ctx, 60*time.Second, "every subscriber to connect", func() bool {
		return connected.Load()+errs.Load() >= int64(cfg.Subscribers)
	}); err != nil {
		return res, err
	}
	res.SubscribersConnected = int(connected.Load())
	e.logf("live: %d subscribers on %d interviews; each VM posts a segment every %s for %s",
		res.SubscribersConnected, len(targets), cfg.PostEvery, cfg.Duration)

	// Posters: one per interview.
	perInterview := map[string]int64{}
	for i := range cfg.Subscribers {
		perInterview[targets[i%len(targets)].id]++
	}
	postHC := &http.Client{Transport: newTransport(len(targets) + 8), Timeout: 30 * time.Second}
	pool0, err := scrapePool(ctx, f.API.Base)
	if err != nil {
		return res, err
	}
	tx0, err := xactCommits(ctx, f.Controller.DBURL)
	if err != nil {
		return res, err
	}
	reads0, err := scrapeMetrics(ctx, f.API.Base)
	if err != nil {
		return res, err
	}
	// runCtx ends the posting; a post under way completes.
	runCtx, cancel := context.WithTimeout(ctx, cfg.Duration)
	defer cancel()
	var posts, expected atomic.Int64
	var posters sync.WaitGroup
	for _, tg := range targets {
		v := vms.VM(tg.id)
		if v == nil {
			return res, fmt.Errorf("no VM for interview %s", tg.id)
		}
		posters.Go(func() {
			t := time.NewTimer(time.Duration(rand.Int64N(int64(cfg.PostEvery))))
			defer t.Stop()
			var seq int64
			for {
				select {
				case <-runCtx.Done():
					return
				case <-t.C:
				}
				seq++
				s := time.Now()
				sent.Store(liveKey{tg.id, seq}, s)
				if _, err := v.Post(ctx, postHC, []session.Segment{Segment(seq)}); err != nil {
					fail(err)
					return
				}
				now := time.Now()
				post.Add(now.Sub(s))
				acked.Store(liveKey{tg.id, seq}, now)
				posts.Add(1)
				expected.Add(perInterview[tg.id])
				t.Reset(cfg.PostEvery)
			}
		})
	}
	posters.Wait()
	if pool1, err := scrapePool(ctx, f.API.Base); err == nil {
		res.Pool = poolDelta(pool0, pool1)
	}
	if tx1, err := xactCommits(ctx, f.Controller.DBURL); err == nil && posts.Load() > 0 {
		res.TxPerPost = float64(tx1-tx0) / float64(posts.Load())
	}
	// Let the last deliveries arrive.
	_ = waitFor(ctx, 5*time.Second, "the last deliveries", func() bool { return delivered.Load() >= expected.Load() })
	if reads1, err := scrapeMetrics(ctx, f.API.Base); err == nil && posts.Load() > 0 {
		res.ReadsPerPost = (reads1[liveReadsMetric] - reads0[liveReadsMetric]) / float64(posts.Load())
	}
	stopSubs()
	subs.Wait()

	res.Posts = posts.Load()
	res.Latency, res.Post = lat.Summary(), post.Summary()
	var afterAck []time.Duration
	for i, k := range reads.keys {
		if t, ok := acked.Load(k); ok {
			afterAck = append(afterAck, reads.at[i].Sub(t.(time.Time)))
		}
	}
	res.AfterAck = Summarize(afterAck)
	res.Delivered, res.Expected, res.Duplicates = delivered.Load(), expected.Load(), dups.Load()
	res.Errors = errs.Load()
	if v, ok := firstErr.Load().(string); ok {
		res.FirstError = v
	}
	e.logf("live: %d posts, %d/%d deliveries (%d duplicates); latency p50 %.1f ms p99 %.1f ms; after the ack p50 %.1f ms p99 %.1f ms; post p50 %.1f ms p99 %.1f ms; errors %d; %.1f transactions and %.2f live-feed reads per post; %.0f of %.0f pool acquires waited, %.1f ms on average",
		res.Posts, res.Delivered, res.Expected, res.Duplicates, ms(res.Latency.P50), ms(res.Latency.P99), ms(res.AfterAck.P50), ms(res.AfterAck.P99), ms(res.Post.P50), ms(res.Post.P99), res.Errors,
		res.TxPerPost, res.ReadsPerPost, res.Pool.Waited, res.Pool.Acquires, ms(res.Pool.AvgWait))
	return res, nil
}
