package main

import (
	"os"
	"slices"
	"strings"
	"testing"
	"time"
)

func TestParseLayout(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want []int
		err  string
	}{
		{in: "", want: nil},
		{in: "2,1,1", want: []int{2, 1, 1}},
		{in: "4", want: []int{4, 0, 0}},
		{in: "2, 2", want: []int{2, 2, 0}},
		{in: "1,2,1", err: "largest first"},
		{in: "2,1", err: "summing to"},
		{in: "1,1,1,1", err: "at most 3"},
		{in: "2,x,2", err: "not a count"},
		{in: "5,-1", err: "not a count"},
	} {
		got, err := parseLayout(tc.in, 4, 3)
		if tc.err != "" {
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("%q: error %v, want one containing %q", tc.in, err, tc.err)
			}
			continue
		}
		if err != nil || !slices.Equal(got, tc.want) {
			t.Errorf("%q: %v, %v; want %v", tc.in, got, err, tc.want)
		}
	}
}

func TestFits(t *testing.T) {
	for _, tc := range []struct {
		count  []int
		host   int
		layout []int
		want   bool
	}{
		{[]int{0, 0, 0}, 1, []int{2, 1, 1}, true},
		{[]int{1, 0, 0}, 0, []int{2, 1, 1}, true},
		{[]int{2, 0, 0}, 0, []int{2, 1, 1}, false}, // three on one host
		{[]int{2, 1, 0}, 1, []int{2, 1, 1}, false}, // 2,2 cannot become 2,1,1
		{[]int{2, 1, 0}, 2, []int{2, 1, 1}, true},
		{[]int{1, 1, 0}, 2, []int{2, 2, 0}, false}, // 1,1,1 cannot become 2,2,0
		{[]int{3, 0, 0}, 0, []int{4, 0, 0}, true},
		{[]int{3, 0, 0}, 2, []int{4, 0, 0}, false},
	} {
		if got := fits(tc.count, tc.host, tc.layout); got != tc.want {
			t.Errorf("fits(%v, %d, %v) = %t, want %t", tc.count, tc.host, tc.layout, got, tc.want)
		}
	}
}

func TestQuantile(t *testing.T) {
	ms := func(n ...int) []time.Duration {
		out := make([]time.Duration, len(n))
		for i, v := range n {
			out[i] = time.Duration(v) * time.Millisecond
		}
		return out
	}
	hundred := make([]int, 100)
	for i := range hundred {
		hundred[i] = 100 - i // unsorted: 100 … 1
	}
	for _, tc := range []struct {
		d    []time.Duration
		q    float64
		want time.Duration
	}{
		{nil, 0.5, 0},
		{ms(7), 0.99, 7 * time.Millisecond},
		{ms(3, 1, 2), 0.5, 2 * time.Millisecond},
		{ms(hundred...), 0.5, 50 * time.Millisecond},
		{ms(hundred...), 0.99, 99 * time.Millisecond},
	} {
		if got := quantile(tc.d, tc.q); got != tc.want {
			t.Errorf("quantile(%d samples, %v) = %v, want %v", len(tc.d), tc.q, got, tc.want)
		}
	}
}

// TestSummarize: the hot host is the one with the most heavy sessions,
// a tie going to the one that served more heavy requests; its share and
// latency are of the ordinary sessions it got.
func TestSummarize(t *testing.T) {
	hosts := []string{"b1", "b2", "b3"}
	ordinary := []served{{"b1", 10 * time.Millisecond, true}, {"b2", 30 * time.Millisecond, true}, {"b2", 20 * time.Millisecond, false}, {"b3", 5 * time.Millisecond, false}}
	for _, tc := range []struct {
		name       string
		heavyAt    []string
		served     map[string]int
		placed     []string
		wantHot    string
		wantShare  float64
		wantHotP50 time.Duration
		wantHeavy  []int
		loose      bool
	}{
		{name: "most heavy sessions", heavyAt: []string{"b2", "b1", "b2", "b3"}, served: map[string]int{"b1": 9, "b2": 9, "b3": 9},
			placed: []string{"b1", "b2", "b2", "b3"}, wantHot: "b2", wantShare: 0.5, wantHotP50: 20 * time.Millisecond, wantHeavy: []int{1, 2, 1}},
		{name: "tie, more heavy requests", heavyAt: []string{"b1", "b3", "b1", "b3"}, served: map[string]int{"b1": 5, "b3": 7},
			placed: []string{"b1", "b1", "b2", "b3"}, wantHot: "b3", wantShare: 0.25, wantHotP50: 5 * time.Millisecond, wantHeavy: []int{2, 0, 2}},
		{name: "not sticky: most heavy requests", loose: true, heavyAt: []string{"b2", "b2", "b2", "b3"}, served: map[string]int{"b1": 10, "b2": 9, "b3": 9},
			placed: []string{"b1", "b1", "b2", "b3"}, wantHot: "b1", wantShare: 0.5, wantHotP50: 10 * time.Millisecond, wantHeavy: []int{0, 3, 1}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			w := summarize(config{name: "c", sticky: !tc.loose}, 1, &result{hosts: hosts, heavyAt: tc.heavyAt, heavyServed: tc.served, placed: tc.placed, ordinary: ordinary})
			if w.hot != tc.wantHot || w.hotShare != tc.wantShare || w.hotP50 != tc.wantHotP50 || !slices.Equal(w.heavy, tc.wantHeavy) {
				t.Errorf("hot %s share %v p50 %v heavy %v; want %s %v %v %v", w.hot, w.hotShare, w.hotP50, w.heavy, tc.wantHot, tc.wantShare, tc.wantHotP50, tc.wantHeavy)
			}
			if w.p50 != 10*time.Millisecond || w.requests != 4 {
				t.Errorf("overall p50 %v over %d requests, want 10ms over 4", w.p50, w.requests)
			}
			if w.firstP99 != 30*time.Millisecond || w.laterP99 != 20*time.Millisecond {
				t.Errorf("p99 of first requests %v, of later ones %v; want 30ms and 20ms", w.firstP99, w.laterP99)
			}
		})
	}
}

func TestBroken(t *testing.T) {
	sticky, loose := config{name: "s", sticky: true}, config{name: "l"}
	for _, tc := range []struct {
		name string
		rows []row
		want string // "" for none
	}{
		{"clean", []row{{config: sticky}, {config: loose, split: 30, heavySplit: 4}}, ""},
		{"split sticky", []row{{config: sticky, split: 1}}, "answered by two hosts"},
		{"failed", []row{{config: loose, failed: 2}}, "requests failed"},
	} {
		err := broken(tc.rows)
		if (tc.want == "") != (err == nil) || (err != nil && !strings.Contains(err.Error(), tc.want)) {
			t.Errorf("%s: %v, want %q", tc.name, err, tc.want)
		}
	}
}

// TestWriteEDSVariant: the static cluster becomes EDS from the stack's
// endpoints file with LEAST_REQUEST, the rest of the file kept; a file
// without such a cluster is refused.
func TestWriteEDSVariant(t *testing.T) {
	dir := t.TempDir()
	for _, tc := range []struct {
		name, yaml string
		want       []string // in the variant
		gone       []string // not in it
		err        bool
	}{
		{name: "static round robin",
			yaml: "admin: {}\nstatic_resources:\n  clusters:\n  - name: app\n    type: STATIC\n    connect_timeout: 0.25s\n    load_assignment:\n      cluster_name: app\n    lb_policy: ROUND_ROBIN\n  - name: other\n",
			want: []string{"node: {id: ingress-1", "admin: {}", "    type: EDS\n", "path: app-endpoints.yaml", "    lb_policy: LEAST_REQUEST\n", "  - name: other\n"},
			gone: []string{"STATIC", "load_assignment", "ROUND_ROBIN"}},
		{name: "already EDS", yaml: "clusters:\n  - name: app\n    type: EDS\n    lb_policy: ROUND_ROBIN\n", err: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			src, dst := dir+"/src.yaml", dir+"/dst.yaml"
			if err := os.WriteFile(src, []byte(tc.yaml), 0o600); err != nil {
				t.Fatal(err)
			}
			err := writeEDSVariant(src, dst)
			if tc.err {
				if err == nil {
					t.Fatal("no error")
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			data, _ := os.ReadFile(dst)
			for _, w := range tc.want {
				if !strings.Contains(string(data), w) {
					t.Errorf("variant lacks %q:\n%s", w, data)
				}
			}
			for _, g := range tc.gone {
				if strings.Contains(string(data), g) {
					t.Errorf("variant still has %q:\n%s", g, data)
				}
			}
		})
	}
}

// TestSummarizeJoin: the joining host is the last; its share is of the
// new sessions; any failure or split session breaks the run.
func TestSummarizeJoin(t *testing.T) {
	hosts := []string{"b1", "b2", "b3", "b4"}
	for _, tc := range []struct {
		name      string
		res       joinResult
		wantShare float64
		broken    string
	}{
		{name: "a quarter", res: joinResult{placed: []string{"b4", "b1", "b2", "b3"}}, wantShare: 0.25},
		{name: "half", res: joinResult{placed: []string{"b4", "b1", "b4", "b3"}, established: []string{"b1", "b2"}}, wantShare: 0.5},
		{name: "none", res: joinResult{placed: []string{"b1"}}, wantShare: 0},
		{name: "split established", res: joinResult{placed: []string{"b4"}, establishedSplit: 1}, wantShare: 1, broken: "answered by two hosts"},
		{name: "failed new", res: joinResult{placed: []string{"b2"}, failed: 2}, broken: "requests failed"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tc.res.hosts = hosts
			w := summarizeJoin(config{name: "c", sticky: true}, 1, &tc.res)
			if w.share != tc.wantShare || w.fair != 0.25 {
				t.Errorf("share %v fair %v, want %v 0.25", w.share, w.fair, tc.wantShare)
			}
			err := brokenJoin([]joinRow{w})
			if (tc.broken == "") != (err == nil) || (err != nil && !strings.Contains(err.Error(), tc.broken)) {
				t.Errorf("broken: %v, want %q", err, tc.broken)
			}
		})
	}
}

// TestValidate: the defaults pass; settings the scenario cannot run are
// refused, each with its flag named.
func TestValidate(t *testing.T) {
	ok := settings{rounds: 1, envoys: 1, backends: 3, capacity: 2, work: 4 * time.Millisecond, heavy: 4, inFlight: 4,
		sessions: 200, over: 10 * time.Second, requests: 10, gap: 100 * time.Millisecond, established: 60,
		loadInterval: 250 * time.Millisecond, loadFactor: 1.25}
	tests := []struct {
		name string
		edit func(*settings)
		want string // "" when valid
	}{
		{"defaults", func(*settings) {}, ""},
		{"only without out", func(s *settings) { s.only = "load" }, ""},
		{"only with out", func(s *settings) { s.only, s.out = "load", "docs/placement.md" }, "-only"},
		{"load read too often", func(s *settings) { s.loadInterval = 50 * time.Millisecond }, "-load-interval"},
		{"load factor below 1", func(s *settings) { s.loadFactor = 0.9 }, "-load-factor"},
		{"three Envoys", func(s *settings) { s.envoys = 3 }, "-envoys"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			st := ok
			tt.edit(&st)
			err := validate(st)
			switch {
			case tt.want == "" && err != nil:
				t.Fatalf("refused: %v", err)
			case tt.want != "" && (err == nil || !strings.Contains(err.Error(), tt.want)):
				t.Fatalf("error %v, want one naming %s", err, tt.want)
			}
		})
	}
}
