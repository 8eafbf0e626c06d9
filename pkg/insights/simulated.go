package insights

import (
	"context"
	"fmt"
	"math"
	"sort"
	"strings"
	"unicode"
)

// SimulatedModel is the Model of simulated assessments.
const SimulatedModel = "simulated"

// SimulatedSummaryPrefix starts the summary of every simulated assessment.
const SimulatedSummaryPrefix = "Simulated assessment (no language model was used)"

// Simulated is the offline scorer: deterministic (the same input gives the
// same assessment), fast, and plain about being simulated (Model
// "simulated", Simulated true, the summary starting with
// SimulatedSummaryPrefix). A competency's score grows with how many of its
// keywords (the words of its name, and the words of four letters or more
// of its description)
// the candidate's answers use and with how long the answers are; its
// evidence is up to two sentences, copied verbatim from the candidate
// segments that match most keywords.
type Simulated struct{}

// NewSimulated returns the simulated scorer.
func NewSimulated() Simulated { return Simulated{} }

// Score scores in without any network or randomness.
func (Simulated) Score(ctx context.Context, in Input) (Assessment, error) {
	if err := ctx.Err(); err != nil {
		return Assessment{}, err
	}
	var answers []Segment
	words := 0
	for _, s := range in.Segments {
		if s.Speaker == SpeakerCandidate && strings.TrimSpace(s.Text) != "" {
			answers = append(answers, s)
			words += len(strings.Fields(s.Text))
		}
	}
	avgWords := 0.0
	if len(answers) > 0 {
		avgWords = float64(words) / float64(len(answers))
	}
	depth := math.Min(1, avgWords/60)
	vocab := make([]wordIndex, len(answers))
	for i, s := range answers {
		vocab[i] = indexWords(s.Text)
	}

	a := Assessment{Model: SimulatedModel, Simulated: true}
	var weighted, weights float64
	for _, c := range in.Competencies {
		kws := keywords(c.Name, c.Description)
		type hit struct {
			seg   Segment
			n     int
			first string // the first keyword matched
		}
		matched := map[string]bool{}
		var hits []hit
		for i, s := range answers {
			h := hit{seg: s}
			for _, kw := range kws {
				if w, ok := vocab[i].match(kw); ok {
					matched[kw] = true
					h.n++
					if h.first == "" {
						h.first = w
					}
				}
			}
			if h.n > 0 {
				hits = append(hits, h)
			}
		}
		coverage := 0.0
		if len(kws) > 0 {
			coverage = float64(len(matched)) / float64(len(kws))
		}
		score := min(MaxScore, max(MinScore, 1+int(math.Round(2.5*coverage+1.5*depth))))
		sort.SliceStable(hits, func(i, j int) bool { return hits[i].n > hits[j].n })
		var ev []Evidence
		for _, h := range hits[:min(2, len(hits))] {
			if q := sentenceWith(h.seg.Text, h.first); q != "" {
				ev = append(ev, Evidence{Seq: h.seg.Seq, Quote: q})
			}
		}
		var found []string
		for _, kw := range kws {
			if matched[kw] {
				found = append(found, kw)
			}
		}
		rationale := fmt.Sprintf("Simulated: the candidate's answers use %d of %d keywords of this competency", len(found), len(kws))
		if len(found) > 0 {
			rationale += " (" + strings.Join(found, ", ") + ")"
		}
		rationale += fmt.Sprintf("; answers average %.0f words.", avgWords)
		a.Competencies = append(a.Competencies, CompetencyAssessment{Name: c.Name, Score: score, Rationale: rationale, Evidence: ev})
		switch {
		case score >= 4:
			a.Strengths = append(a.Strengths, "Simulated: "+c.Name+" is well covered in the answers")
		case score <= 2:
			a.Concerns = append(a.Concerns, "Simulated: little in the answers speaks to "+c.Name)
		}
		weighted += c.Weight * float64(score)
		weights += c.Weight
	}
	overall := 0.0
	if weights > 0 {
		overall = weighted / weights
	}
	switch {
	case overall >= 4:
		a.Recommendation = StrongYes
	case overall >= 3:
		a.Recommendation = Yes
	case overall >= 2:
		a.Recommendation = No
	default:
		a.Recommendation = StrongNo
	}
	a.Summary = fmt.Sprintf("%s: scores come from answer lengths and keyword matches against each competency, not from an assessment of the content. %d candidate answers, %.0f words on average.",
		SimulatedSummaryPrefix, len(answers), avgWords)
	return a, nil
}

// isStopword reports whether w is a frequent word of four letters or more
// that says nothing about a competency.
func isStopword(w string) bool {
	switch w {
	case "about", "after", "also", "been", "being", "from", "have", "into", "more", "most",
		"other", "over", "such", "than", "that", "their", "them", "then", "there", "these",
		"they", "this", "those", "through", "under", "very", "well", "were", "what", "when",
		"where", "which", "while", "will", "with", "within", "would", "your", "ability", "able":
		return true
	}
	return false
}

// keywords returns a competency's keywords, lower-cased and distinct, in
// order of appearance: every word of its name of two letters or more, and
// the words of its description of four letters or more that are not
// stopwords.
func keywords(name, description string) []string {
	var out []string
	seen := map[string]bool{}
	add := func(s string, minLen int) {
		for _, w := range tokens(s) {
			if len([]rune(w)) < minLen || isStopword(w) || seen[w] {
				continue
			}
			seen[w] = true
			out = append(out, w)
		}
	}
	add(name, 2)
	add(description, 4)
	return out
}

// tokens splits s into lower-cased words of letters and digits.
func tokens(s string) []string {
	return strings.FieldsFunc(strings.ToLower(s), func(r rune) bool {
		return !unicode.IsLetter(r) && !unicode.IsDigit(r)
	})
}

// wordIndex holds the words of one answer, and each word of five letters
// or more under its first five letters (a crude stem: "communicate"
// matches "communication").
type wordIndex struct {
	words map[string]bool
	stems map[string]string // stem → the first word with it
}

func indexWords(text string) wordIndex {
	ix := wordIndex{words: map[string]bool{}, stems: map[string]string{}}
	for _, w := range tokens(text) {
		ix.words[w] = true
		if st, ok := stem(w); ok {
			if _, seen := ix.stems[st]; !seen {
				ix.stems[st] = w
			}
		}
	}
	return ix
}

// match returns the answer's word matching kw: kw itself, or one sharing
// its stem.
func (ix wordIndex) match(kw string) (string, bool) {
	if ix.words[kw] {
		return kw, true
	}
	if st, ok := stem(kw); ok {
		w, found := ix.stems[st]
		return w, found
	}
	return "", false
}

// stem is the first five letters of w, if it has five.
func stem(w string) (string, bool) {
	n := 0
	for i := range w {
		if n == 5 {
			return w[:i], true
		}
		n++
	}
	return w, n == 5
}

// sentenceWith returns the sentence of text holding word (case-folded),
// trimmed of surrounding spaces and cut to about 200 bytes at a space; the
// result is always a verbatim substring of text.
func sentenceWith(text, word string) string {
	lower := strings.ToLower(text)
	i := strings.Index(lower, word)
	if i < 0 || len(lower) != len(text) {
		// Case folding changed byte offsets: quote the segment's start.
		i = 0
	}
	start := 0
	for _, sep := range []string{". ", "? ", "! "} {
		if j := strings.LastIndex(text[:i], sep); j >= 0 && j+len(sep) > start {
			start = j + len(sep)
		}
	}
	end := len(text)
	for _, sep := range []string{". ", "? ", "! "} {
		if j := strings.Index(text[i:], sep); j >= 0 && i+j+1 < end {
			end = i + j + 1
		}
	}
	q := strings.TrimSpace(text[start:end])
	if len(q) > 200 {
		cut := strings.LastIndex(q[:200], " ")
		if cut <= 0 {
			return ""
		}
		q = strings.TrimSpace(q[:cut])
	}
	return q
}
