package doctor

import (
	"encoding/json"
	"fmt"
	"io"
	"slices"
	"strings"
)

// Severity grades a problem.
type Severity string

// Severities.
const (
	// Error: sessions break (they move, fail, or the mode is not in
	// effect); the doctor command exits non-zero.
	Error Severity = "error"
	// Warning: sessions hold, at a cost or with a weaker guarantee.
	Warning Severity = "warning"
)

// Problem is one disagreement between Envoy's configuration and the
// service's.
type Problem struct {
	Severity Severity `json:"severity"`
	// Check is a stable identifier of the check, e.g. "ext_proc.failure_mode_allow".
	Check string `json:"check"`
	// Where names the place: listener, filter, route and cluster by name.
	Where string `json:"where"`
	// Problem is what is wrong.
	Problem string `json:"problem"`
	// Breaks is what it breaks, with the figures measured where they were.
	Breaks string `json:"breaks"`
	// Fix is the exact change to make.
	Fix string `json:"fix"`
	// rule is the catalogue's rule the problem was found by (nil when
	// the problem was read back from JSON).
	rule *Rule
}

// String is the problem on one line.
func (p Problem) String() string {
	return fmt.Sprintf("%s %s: %s: %s; breaks: %s; fix: %s", p.Severity, p.Check, p.Where, p.Problem, p.Breaks, p.Fix)
}

// Report is the outcome of one check of an Envoy.
type Report struct {
	// Envoy is where its configuration was read.
	Envoy string `json:"envoy"`
	// Pools are the pools checked.
	Pools []string `json:"pools"`
	// Problems are sorted: errors first.
	Problems []Problem `json:"problems"`
}

// Count returns how many problems have the severity.
func (r *Report) Count(s Severity) int {
	n := 0
	for _, p := range r.Problems {
		if p.Severity == s {
			n++
		}
	}
	return n
}

// Has reports whether a problem of the given check was found.
func (r *Report) Has(check string) bool {
	return slices.ContainsFunc(r.Problems, func(p Problem) bool { return p.Check == check })
}

// WriteText writes one line per problem and a summary line.
func (r *Report) WriteText(w io.Writer) error {
	var b strings.Builder
	for _, p := range r.Problems {
		b.WriteString(p.String())
		b.WriteByte('\n')
	}
	fmt.Fprintf(&b, "envoy %s, pools %s: %d errors, %d warnings\n", r.Envoy, strings.Join(r.Pools, ", "),
		r.Count(Error), r.Count(Warning))
	_, err := io.WriteString(w, b.String())
	return err
}

// WriteJSON writes the report as one JSON object.
func (r *Report) WriteJSON(w io.Writer) error {
	out := *r
	if out.Problems == nil {
		out.Problems = []Problem{}
	}
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(out)
}

// add records a problem once (several pools may share a filter).
func (r *Report) add(p Problem) {
	if !slices.Contains(r.Problems, p) {
		r.Problems = append(r.Problems, p)
	}
}

// sort puts errors first, then by check and place.
func (r *Report) sort() {
	slices.SortStableFunc(r.Problems, func(a, b Problem) int {
		if a.Severity != b.Severity {
			if a.Severity == Error {
				return -1
			}
			return 1
		}
		if c := strings.Compare(a.Check, b.Check); c != 0 {
			return c
		}
		return strings.Compare(a.Where, b.Where)
	})
}
