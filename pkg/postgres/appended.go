package postgres

import (
	"strconv"
	"strings"
	"time"

	"github.com/interviewvm/controlplane/pkg/session"
)

// AppendedHook is told, right after an ingest flush committed, of the
// segments it stored for one interview (in seq order, exactly as a read
// would return them) and of the interview as the flush left it. It runs on
// the committing goroutine, before the VMs are answered: it must not block
// (the live feed of this replica hands the segments to its subscribers
// from memory instead of reading them back).
type AppendedHook func(id string, segs []session.Segment, iv session.Interview)

// OnAppended adds a hook told of every flush's stored segments. Hooks are
// added while the controller is assembled, before it serves.
func (db *DB) OnAppended(h AppendedHook) {
	db.appendedHooks = append(db.appendedHooks, h)
}

// storedSeg is one segment a flush inserted (not one already stored).
type storedSeg struct {
	id  string
	seq int64
}

// flushRows are the segments a flush sent to the insert, as parallel
// arrays (one row per index).
type flushRows struct {
	ids, speakers, texts, items []string
	seqs                        []int64
	failed                      []bool
}

// runAppendedHooks tells the hooks of what one committed flush stored.
// stored is in (interview, seq) order; created is the transaction's start,
// the rows' created_at.
func (db *DB) runAppendedHooks(rows flushRows, stored []storedSeg, created time.Time, ivs map[string]*session.Interview) {
	if len(db.appendedHooks) == 0 || len(stored) == 0 {
		return
	}
	type key struct {
		id  string
		seq int64
	}
	at := make(map[key]int, len(rows.seqs))
	for i := range rows.seqs {
		k := key{rows.ids[i], rows.seqs[i]}
		if _, ok := at[k]; !ok { // the first text of a seq is the one inserted
			at[k] = i
		}
	}
	for from := 0; from < len(stored); {
		id := stored[from].id
		to := from
		var segs []session.Segment
		for ; to < len(stored) && stored[to].id == id; to++ {
			i := at[key{id, stored[to].seq}]
			segs = append(segs, session.Segment{Seq: rows.seqs[i], Speaker: rows.speakers[i], Text: rows.texts[i],
				ItemID: rows.items[i], Failed: rows.failed[i], Created: created})
		}
		if iv := ivs[id]; iv != nil {
			for _, h := range db.appendedHooks {
				h(id, segs, *iv)
			}
		}
		from = to
	}
}

// notifyKey is an interview's entry in a change notification: its id, and
// ":seq" when only its transcript changed, up to seq (a replica whose
// subscribers already have it need not read).
func notifyKey(id string, upTo int64) string {
	if upTo <= 0 {
		return id
	}
	return id + ":" + strconv.FormatInt(upTo, 10)
}

// lastStored returns the highest stored seq of each interview.
func lastStored(stored []storedSeg) map[string]int64 {
	top := map[string]int64{}
	for _, s := range stored {
		top[s.id] = max(top[s.id], s.seq)
	}
	return top
}

// parseNotifyKey reads notifyKey's form; anything else is an id that may
// have changed in any way.
func parseNotifyKey(key string) (id string, upTo int64) {
	id, seq, ok := strings.Cut(key, ":")
	if !ok {
		return key, 0
	}
	n, err := strconv.ParseInt(seq, 10, 64)
	if err != nil || n <= 0 {
		return id, 0
	}
	return id, n
}
