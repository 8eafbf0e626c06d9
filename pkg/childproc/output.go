//go:build unix

package childproc

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
)

// DefaultOutputMsg is the message of a forwarded line when
// Options.OutputMsg is empty.
const DefaultOutputMsg = "child output"

// maxLine bounds one forwarded line of a child's output; longer lines are
// forwarded in pieces.
const maxLine = 64 << 10

// forward logs each line r yields until r ends: when the process and
// everything it spawned (its process group, which Stop kills) have exited.
func (f *Forker) forward(log *slog.Logger, msg, stream string, r io.ReadCloser) {
	defer f.wg.Done()
	defer r.Close()
	log = log.With("stream", stream)
	br := bufio.NewReaderSize(r, maxLine)
	for {
		line, err := br.ReadSlice('\n')
		if line = bytes.TrimRight(line, "\r\n"); len(line) > 0 {
			log.Log(context.Background(), levelOf(line), msg, "line", string(line))
		}
		if err != nil && !errors.Is(err, bufio.ErrBufferFull) {
			return
		}
	}
}

// levelOf returns the level of a JSON log line (slog's "level" field), or
// Info.
func levelOf(line []byte) slog.Level {
	if len(line) == 0 || line[0] != '{' {
		return slog.LevelInfo
	}
	var v struct {
		Level string `json:"level"`
	}
	var l slog.Level
	if json.Unmarshal(line, &v) != nil || l.UnmarshalText([]byte(v.Level)) != nil {
		return slog.LevelInfo
	}
	return l
}
