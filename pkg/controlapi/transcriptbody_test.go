package controlapi

import (
	"bytes"
	"encoding/json"
	"reflect"
	"strings"
	"testing"

	"github.com/interviewvm/controlplane/pkg/session"
)

// transcriptSeeds are bodies of the transcript route: the shapes the fast
// decoder reads and many it must leave to encoding/json.
var transcriptSeeds = []string{
	`{"segments":[{"seq":1,"speaker":"candidate","text":"hi"}]}`,
	` { "segments" : [ { "seq" : 1 , "speaker" : "candidate" , "text" : "hi" , "item_id" : "it_1" , "failed" : true } , {"seq":2,"speaker":"interviewer","text":"","failed":false} ] } ` + "\n",
	`{"segments":[]}`, `{}`, `{"segments":[{}]}`, `{"segments":null}`, `{"segments":[null]}`,
	`{"segments":[{"seq":-0,"speaker":"candidate","text":"x"}]}`,
	`{"segments":[{"seq":9223372036854775807,"speaker":"candidate","text":"x"}]}`,
	`{"segments":[{"seq":9223372036854775808,"speaker":"candidate","text":"x"}]}`,
	`{"segments":[{"seq":-9223372036854775808,"speaker":"candidate","text":"x"}]}`,
	`{"segments":[{"seq":1.0,"speaker":"candidate","text":"x"}]}`,
	`{"segments":[{"seq":1e3,"speaker":"candidate","text":"x"}]}`,
	`{"segments":[{"seq":01,"speaker":"candidate","text":"x"}]}`,
	`{"segments":[{"seq":"1","speaker":"candidate","text":"x"}]}`,
	`{"segments":[{"seq":1,"speaker":5,"text":"x"}]}`,
	`{"segments":[{"seq":1,"speaker":"candidate","text":"x","failed":"true"}]}`,
	`{"segments":[{"seq":1,"speaker":"candidate","text":"x","failed":truex}]}`,
	`{"segments":[{"seq":1x,"speaker":"candidate","text":"x"}]}`,
	`{"segments":[{"seq":1,"speaker":"candidate","text":"x","extra":1}]}`,
	`{"segments":[{"SEQ":1,"Speaker":"candidate","text":"x"}]}`,
	`{"Segments":[{"seq":1,"speaker":"candidate","text":"x"}]}`,
	`{"segments":[{"seq":1,"speaker":"candidate","text":"x"}],"segments":[{"seq":2}]}`,
	`{"segments":[{"seq":1,"seq":2,"speaker":"candidate","text":"x","text":"y"}]}`,
	`{"segments":[{"seq":1,"speaker":"candidate","text":"x","created_at":"2026-01-01T00:00:00Z"}]}`,
	`{"segments":[{"seq":1,"speaker":"candidate","text":"a\"b\\c\nd\u00e9\ud83d\ude80\/"}]}`,
	`{"segments":[{"seq":1,"speaker":"candidate","text":"\ud800 \u0000 \udc00x"}]}`,
	"{\"segments\":[{\"seq\":1,\"speaker\":\"candidate\",\"text\":\"\xff\xfe bad \xed\xa0\x80\"}]}",
	"{\"segments\":[{\"seq\":1,\"speaker\":\"candidate\",\"text\":\"caf\xc3\xa9 \xe2\x82\xac\"}]}",
	"{\"segments\":[{\"seq\":1,\"speaker\":\"candidate\",\"text\":\"tab\there\"}]}",
	`{"segments":[{"seq":1,"speaker":"candidate","text":"x"}]} `, `{"segments":[{"seq":1,"speaker":"candidate","text":"x"}]}}`,
	`{"segments":[{"seq":1,"speaker":"candidate","text":"x"}]} {}`, `{"segments":[{"seq":1,"speaker":"candidate","text":"x"}]`,
	`{"segments":[{"seq":1,"speaker":"candidate","text":"x"},]}`, `{"segments":[{"seq":1,"speaker":"candidate","text":"x",}]}`,
	`{"segments":[{"seq":1,"speaker":"candidate","text":"x\`, `{"segments":[{"seq":1,"speaker":"candidate","text":"{{{"}]}`,
	`{"seg\u006dents":[]}`, `[]`, `null`, ``, ` `, `{"segments":{}}`, `{"segments":[[]]}`,
}

// decodeStrict is the generic route's decoding of a transcript body.
func decodeStrict(body string) (session.TranscriptBatch, error) {
	var b session.TranscriptBatch
	err := decodeJSON(strings.NewReader(body), &b)
	return b, err
}

// checkTranscriptDecoder fails when the fast decoder accepts a body that
// the strict generic decoder refuses or reads differently.
func checkTranscriptDecoder(t *testing.T, body string) {
	t.Helper()
	fast, ok := parseTranscriptBatch(body)
	if !ok {
		return // left to the generic decoder: same result by construction
	}
	want, err := decodeStrict(body)
	if err != nil {
		t.Fatalf("fast decoder accepted %q, the strict decoder refuses it: %v", body, err)
	}
	if !reflect.DeepEqual(fast, want) {
		t.Fatalf("%q:\nfast   %#v\nstrict %#v", body, fast, want)
	}
}

func TestTranscriptDecoderMatchesEncodingJSON(t *testing.T) {
	accepted := 0
	for _, body := range transcriptSeeds {
		checkTranscriptDecoder(t, body)
		if _, ok := parseTranscriptBatch(body); ok {
			accepted++
		}
	}
	// The common shapes take the fast path (else it would be dead code).
	for _, body := range transcriptSeeds[:3] {
		if _, ok := parseTranscriptBatch(body); !ok {
			t.Errorf("fast decoder refused %q", body)
		}
	}
	if accepted < 8 {
		t.Errorf("fast decoder accepted %d seeds, want at least 8", accepted)
	}
	// A full batch as sessionvm sends it, built by encoding/json.
	var batch session.TranscriptBatch
	for i := range 500 {
		batch.Segments = append(batch.Segments, session.Segment{Seq: int64(i + 1), Speaker: session.SpeakerCandidate,
			Text: strings.Repeat("word é \"quoted\"\n ", i%7), ItemID: "item_" + strings.Repeat("x", i%3), Failed: i%5 == 0})
	}
	raw, err := json.Marshal(batch)
	if err != nil {
		t.Fatal(err)
	}
	fast, ok := parseTranscriptBatch(string(raw))
	if !ok || !reflect.DeepEqual(fast, batch) {
		t.Fatalf("round trip of a 500-segment batch: ok=%v equal=%v", ok, reflect.DeepEqual(fast, batch))
	}
}

// The body read in full then replayed gives the generic decoder the same
// bytes and the same read error, so errors stay those of every route.
func TestReadBodyGrows(t *testing.T) {
	body := bytes.Repeat([]byte("0123456789"), 1000)
	for _, cl := range []int64{-1, 0, 10, int64(len(body)), 1 << 30} {
		got, err := readBody(bytes.NewReader(body), cl)
		if err != nil || !bytes.Equal(got, body) {
			t.Fatalf("content length %d: %d bytes, %v", cl, len(got), err)
		}
	}
}

// FuzzTranscriptDecoder checks the fast transcript decoder against
// encoding/json: whatever it accepts, the strict decoder accepts too, with
// the same value.
func FuzzTranscriptDecoder(f *testing.F) {
	for _, s := range transcriptSeeds {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, body string) { checkTranscriptDecoder(t, body) })
}

// benchBody is a batch of 50 segments as sessionvm posts it.
func benchBody(b *testing.B) string {
	var batch session.TranscriptBatch
	for i := range 50 {
		batch.Segments = append(batch.Segments, session.Segment{Seq: int64(i + 1), Speaker: session.SpeakerCandidate,
			Text: "so the way I would approach this is to start from the data model", ItemID: "item_abcdefghijkl"})
	}
	raw, err := json.Marshal(batch)
	if err != nil {
		b.Fatal(err)
	}
	return string(raw)
}

func BenchmarkTranscriptDecode(b *testing.B) {
	body := benchBody(b)
	b.Run("fast", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, ok := parseTranscriptBatch(body); !ok {
				b.Fatal("refused")
			}
		}
	})
	b.Run("encoding-json", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, err := decodeStrict(body); err != nil {
				b.Fatal(err)
			}
		}
	})
}
