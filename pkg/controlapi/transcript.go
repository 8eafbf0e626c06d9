package controlapi

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strconv"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/interviewvm/controlplane/pkg/livefeed"
	"github.com/interviewvm/controlplane/pkg/session"
)

// Feed hands the new segments of an interview to its live streams
// (livefeed.Hub): one store read per change, whatever the number of
// streams. The channel closes when the stream fell too far behind (or the
// feed stops); the client then resumes with Last-Event-ID.
type Feed interface {
	Subscribe(key string, after int64) (<-chan livefeed.Update, func())
}

// transcriptPage bounds the segments one read returns.
const transcriptPage = 1000

type transcriptAnswer struct {
	Segments []session.Segment `json:"segments"`
	Complete bool              `json:"complete"`
}

func afterSeq(v string) (int64, error) {
	if v == "" {
		return 0, nil
	}
	n, err := strconv.ParseInt(v, 10, 64)
	if err != nil || n < 0 {
		return 0, session.Errorf(session.EINVALID, "after_seq must be a non-negative integer")
	}
	return n, nil
}

// handleTranscriptGet handles "GET /v1/interviews/{id}/transcript?after_seq=".
// complete is true once the interview is completed: every segment up to
// the VM's last one is stored.
func (s *Server) handleTranscriptGet(c echo.Context) error {
	id, err := pathID(c, "id")
	if err != nil {
		return err
	}
	after, err := afterSeq(c.QueryParam("after_seq"))
	if err != nil {
		return err
	}
	var all []session.Segment
	var iv session.Interview
	for {
		segs, cur, err := s.catalog.Transcript(c.Request().Context(), principal(c).Scope(), id, after, transcriptPage)
		if err != nil {
			return err
		}
		iv = cur
		all = append(all, segs...)
		if len(segs) < transcriptPage {
			break
		}
		after = segs[len(segs)-1].Seq
	}
	if all == nil {
		all = []session.Segment{}
	}
	return c.JSON(http.StatusOK, transcriptAnswer{Segments: all, Complete: iv.Status == session.StateCompleted})
}

// handleTranscriptStream handles "GET /v1/interviews/{id}/transcript/stream":
// server-sent events, one "segment" event per segment with id = seq,
// resumable with Last-Event-ID, a keep-alive comment while idle, and an
// "end" event once the interview is terminal and everything was sent.
func (s *Server) handleTranscriptStream(c echo.Context) error {
	id, err := pathID(c, "id")
	if err != nil {
		return err
	}
	last, err := afterSeq(c.Request().Header.Get("Last-Event-ID"))
	if err != nil {
		return session.Errorf(session.EINVALID, "Last-Event-ID must be a seq this stream sent")
	}
	if q := c.QueryParam("after_seq"); q != "" && c.Request().Header.Get("Last-Event-ID") == "" {
		if last, err = afterSeq(q); err != nil {
			return err
		}
	}
	ctx := c.Request().Context()
	scope := principal(c).Scope()
	// Subscribe before the first read so no change falls between them:
	// the stream's own reads catch up (and check access); from then on the
	// feed's shared reader brings what is new.
	updates, cancel := s.feed.Subscribe(id, last)
	defer cancel()
	segs, iv, err := s.catalog.Transcript(ctx, scope, id, last, transcriptPage)
	if err != nil {
		return err // not found (or another tenant's) before anything is written
	}
	s.metrics.streams.Inc()
	defer s.metrics.streams.Dec()
	w := c.Response()
	w.Header().Set(echo.HeaderContentType, "text/event-stream")
	w.Header().Set(echo.HeaderCacheControl, "no-cache")
	w.Header().Set("X-Accel-Buffering", "no")
	w.WriteHeader(http.StatusOK)
	w.Flush()
	keepAlive := time.NewTicker(s.cfg.StreamKeepAlive)
	defer keepAlive.Stop()
	// more: the segments came from this stream's own read and filled a
	// page, so it reads on; otherwise it waits for the feed (whose update
	// says itself whether another follows).
	// following: the feed's last update said another follows at once, so
	// the interview's state in it is not the end yet.
	more, following := len(segs) == transcriptPage, false
	// encoded is each segment's JSON when the feed made it (shared by
	// every stream); the stream's own reads encode theirs.
	var encoded [][]byte
	var buf []byte
	for {
		buf = buf[:0]
		for i, seg := range segs {
			if seg.Seq <= last {
				continue // the feed and the catch-up read overlap
			}
			buf = fmt.Appendf(buf, "id: %d\nevent: segment\ndata: ", seg.Seq)
			if encoded != nil {
				buf = append(buf, encoded[i]...)
			} else {
				data, _ := json.Marshal(seg)
				buf = append(buf, data...)
			}
			buf = append(buf, "\n\n"...)
			last = seg.Seq
		}
		if len(buf) > 0 {
			if _, err := w.Write(buf); err != nil {
				return nil // the client went away
			}
			w.Flush()
			if cap(buf) > 64<<10 {
				buf = nil // a catch-up page: do not keep it for the stream's life
			}
		}
		if !more && !following && iv.Status.Terminal() {
			data, _ := json.Marshal(map[string]any{"status": iv.Status, "end_reason": iv.EndReason, "complete": iv.Status == session.StateCompleted})
			_, _ = fmt.Fprintf(w, "event: end\ndata: %s\n\n", data)
			w.Flush()
			return nil
		}
		if more {
			segs, iv, err = s.catalog.Transcript(ctx, scope, id, last, transcriptPage)
			if err != nil {
				if ctx.Err() != nil {
					return nil
				}
				s.logger.Warn("transcript stream read failed", "session_id", id, "error", err)
				return nil // headers are sent: end the stream; the client resumes with Last-Event-ID
			}
			more, encoded = len(segs) == transcriptPage, nil
			continue
		}
		segs, encoded = nil, nil
		select {
		case <-ctx.Done():
			return nil
		case <-s.closing:
			return nil
		case <-keepAlive.C:
			if _, err := fmt.Fprint(w, ": keep-alive\n\n"); err != nil {
				return nil
			}
			w.Flush()
		case u, ok := <-updates:
			if !ok {
				return nil // dropped for falling behind (or the feed stopped): the client resumes with Last-Event-ID
			}
			segs, encoded, iv, following = u.Segments, u.JSON, u.Interview, u.More
		}
	}
}
