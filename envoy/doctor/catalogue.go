package doctor

import (
	"slices"
	"strings"
)

// Rule is one entry of the doctor's catalogue: one way an Envoy's
// configuration can disagree with the service's, under a check id. A check
// id that can fail in ways that break different things (or break them
// more or less) has one rule for each.
type Rule struct {
	// ID is the check's stable identifier (Problem.Check), e.g.
	// "ext_proc.failure_mode_allow".
	ID string
	// Severity is the severity of every problem the rule finds.
	Severity Severity
	// Compares says what the rule compares, for the README's table.
	Compares string
	// Breaks is what a problem breaks: a stable sentence, with a ${name}
	// placeholder where it names the pool's own value.
	Breaks string
	// Fix is the change to make, with ${name} placeholders where it
	// depends on the pool or on Envoy's configuration.
	Fix string
}

// Catalogue lists every rule the doctor checks, in the README's order.
func Catalogue() []*Rule {
	return slices.Clone(rules)
}

// severities are the severities of the catalogue's rules, the most severe
// first.
var severities = []Severity{Error, Warning}

// Severities lists the severities a problem can have, the most severe
// first.
func Severities() []Severity {
	return slices.Clone(severities)
}

// at is the problem of the rule found at where: what is wrong, and the
// rule's texts with each placeholder named in fill (pairs of "${name}" and
// its value) filled in.
func (r *Rule) at(where, what string, fill ...string) Problem {
	f := strings.NewReplacer(fill...)
	return Problem{Severity: r.Severity, Check: r.ID, Where: where, Problem: what,
		Breaks: f.Replace(r.Breaks), Fix: f.Replace(r.Fix), rule: r}
}
