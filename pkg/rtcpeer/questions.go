package rtcpeer

import (
	"cmp"
	"fmt"
	"math"
	"slices"
	"strings"

	"github.com/interviewvm/controlplane/pkg/session"
)

// DefaultQuestions is how many questions the simulated interviewer asks
// when InterviewerConfig.Questions is zero (at least one per competency).
const DefaultQuestions = 5

// question returns the n-th question shape (0-based, cycling) about a
// competency.
func question(n int, name string) string {
	switch n % 5 {
	case 0:
		return fmt.Sprintf("Tell me about a project where %s mattered. What was your part in it?", name)
	case 1:
		return fmt.Sprintf("What is the hardest %s problem you have solved, and how did you approach it?", name)
	case 2:
		return fmt.Sprintf("How would you explain a key idea of %s to a new teammate?", name)
	case 3:
		return fmt.Sprintf("Which mistakes do you see people make with %s, and how do you avoid them?", name)
	default:
		return fmt.Sprintf("How do you keep your %s skills current?", name)
	}
}

// Questions returns the interview's questions for pos: total questions
// (at least one per competency) shared out in proportion to the
// competencies' weights by largest remainder, heaviest competency first.
// Weights are relative: 3 and 2 mean the same as 0.6 and 0.4; a weight
// that is not positive counts as the smallest positive share. A position
// without competencies gets general questions about the role.
func Questions(pos session.Position, total int) []string {
	title := strings.TrimSpace(pos.Title)
	if title == "" {
		title = "this role"
	}
	comps := slices.Clone(pos.Competencies)
	if len(comps) == 0 {
		return []string{
			fmt.Sprintf("What drew you to %s?", title),
			fmt.Sprintf("Tell me about the piece of work you are proudest of that relates to %s.", title),
		}
	}
	if total < len(comps) {
		total = len(comps)
	}
	slices.SortStableFunc(comps, func(a, b session.Competency) int { return cmp.Compare(b.Weight, a.Weight) })

	sum := 0.0
	for _, c := range comps {
		sum += max(c.Weight, 0)
	}
	// Every competency gets one question; the rest are shared by weight,
	// the largest remainders rounding up.
	counts := make([]int, len(comps))
	rema := make([]float64, len(comps))
	spare := total - len(comps)
	given := 0
	for i, c := range comps {
		share := 1.0 / float64(len(comps))
		if sum > 0 {
			share = max(c.Weight, 0) / sum
		}
		exact := share * float64(spare)
		counts[i] = 1 + int(math.Floor(exact))
		rema[i] = exact - math.Floor(exact)
		given += counts[i]
	}
	for given < total {
		best := 0
		for i := range rema {
			if rema[i] > rema[best] {
				best = i
			}
		}
		counts[best]++
		rema[best] = -1
		given++
	}

	var qs []string
	for i, c := range comps {
		name := strings.TrimSpace(c.Name)
		for n := range counts[i] {
			q := question(n, name)
			if n == 0 && strings.TrimSpace(c.Description) != "" {
				q = fmt.Sprintf("Let's talk about %s: %s. %s", name, strings.TrimSuffix(strings.TrimSpace(c.Description), "."), q)
			}
			qs = append(qs, q)
		}
	}
	return qs
}
