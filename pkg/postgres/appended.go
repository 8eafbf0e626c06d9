package postgres

import (
	"cmp"
	"slices"
	"strconv"
	"strings"

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

// runAppendedHooks tells the hooks of what one committed flush inserted:
// per interview, its new segments (sorted here by seq), with the
// interview as committed.
func (db *DB) runAppendedHooks(handed map[string][]session.Segment, ivs map[string]*session.Interview) {
	if len(db.appendedHooks) == 0 {
		return
	}
	for id, segs := range handed {
		iv := ivs[id]
		if iv == nil || len(segs) == 0 {
			continue
		}
		slices.SortFunc(segs, func(a, b session.Segment) int { return cmp.Compare(a.Seq, b.Seq) })
		for _, h := range db.appendedHooks {
			h(id, segs, *iv)
		}
	}
}

// lastSeq returns the highest seq of segs (0: none).
func lastSeq(segs []session.Segment) int64 {
	var top int64
	for _, s := range segs {
		top = max(top, s.Seq)
	}
	return top
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
