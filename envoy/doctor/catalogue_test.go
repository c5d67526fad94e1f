package doctor

import (
	"flag"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

var update = flag.Bool("update", false, "rewrite the README's table of doctor checks from the catalogue")

// The README's table of checks lies between these lines.
const (
	tableBegin = "<!-- The table of checks is the doctor's catalogue (envoy/doctor/rules.go): go test ./envoy/doctor -update rewrites it. -->\n"
	tableEnd   = "<!-- end of the table of checks -->\n"
)

// checksTable is the catalogue as the README's Markdown table: one row per
// rule.
func checksTable(rules []*Rule) string {
	cell := func(s string) string { return strings.ReplaceAll(s, "|", `\|`) }
	var b strings.Builder
	b.WriteString("| check | severity | what is compared | what it breaks |\n|---|---|---|---|\n")
	for _, r := range rules {
		b.WriteString("| `" + r.ID + "` | " + string(r.Severity) + " | " + cell(r.Compares) + " | " + cell(r.Breaks) + " |\n")
	}
	return b.String()
}

// TestREADMETable: the README's table of checks is the catalogue's.
func TestREADMETable(t *testing.T) {
	path := filepath.Join("..", "..", "README.md")
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	readme := string(data)
	before, rest, ok := strings.Cut(readme, tableBegin)
	got, after, ok2 := strings.Cut(rest, tableEnd)
	if !ok || !ok2 {
		t.Fatalf("%s has no table of checks between %q and %q", path, tableBegin, tableEnd)
	}
	// Blank lines around the table keep it a block of its own.
	want := "\n" + checksTable(Catalogue()) + "\n"
	if *update {
		if err := os.WriteFile(path, []byte(before+tableBegin+want+tableEnd+after), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	if got != want {
		t.Errorf("the README's table of checks is not the catalogue's; go test ./envoy/doctor -update rewrites it")
	}
}

// TestCatalogue: every rule says what it compares, breaks and fixes, with a
// severity of the catalogue's set, which each severity serves; no rule is
// listed twice, and no two rules of a check id read the same.
func TestCatalogue(t *testing.T) {
	catalogue := Catalogue()
	for i, r := range catalogue {
		if r.ID == "" || r.Compares == "" || r.Breaks == "" || r.Fix == "" {
			t.Errorf("rule %+v: a text is missing", *r)
		}
		if !slices.Contains(Severities(), r.Severity) {
			t.Errorf("rule %s: severity %q is not one of %v", r.ID, r.Severity, Severities())
		}
		for _, o := range catalogue[:i] {
			if o == r {
				t.Errorf("rule %s (%s) is listed twice", r.ID, r.Compares)
			}
			if o.ID == r.ID && (o.Compares == r.Compares || o.Severity == r.Severity && o.Breaks == r.Breaks && o.Fix == r.Fix) {
				t.Errorf("two rules of %s read the same: %q", r.ID, r.Compares)
			}
		}
	}
	for _, s := range Severities() {
		if !slices.ContainsFunc(catalogue, func(r *Rule) bool { return r.Severity == s }) {
			t.Errorf("no rule has severity %s", s)
		}
	}
}
