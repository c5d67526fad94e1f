package main

import (
	"cmp"
	"fmt"
	"os"
	"os/exec"
	"regexp"
	"runtime"
	"slices"
	"strings"
	"time"

	"github.com/envoy-affinity/envoy-affinity/internal/launch"
)

// row is one configuration's figures in one round, hosts in backend order.
type row struct {
	config config
	round  int
	hosts  []string
	// heavy is the heavy sessions placed per host; heavyShare the share of
	// heavy requests each host served.
	heavy      []int
	heavyShare []float64
	dropped    int
	// placed is the new ordinary sessions per host.
	placed []int
	// hot is the host with the most heavy sessions (ties, and every host
	// of a configuration that is not sticky: the one that served the most
	// heavy requests); hotShare its share of new sessions.
	hot      string
	hotShare float64
	fair     float64
	// p50, p99 of every ordinary request, and of those the hot host served;
	// of the sessions' first requests (the one that places a session) and
	// of the later ones.
	p50, p99, hotP50, hotP99 time.Duration
	firstP50, firstP99       time.Duration
	laterP50, laterP99       time.Duration
	requests, hotRequests    int
	heavySplit, split        int
	heavyFailed, failed      int
}

// summarize turns one run's result into its row.
func summarize(c config, round int, res *result) row {
	w := row{config: c, round: round, hosts: res.hosts, dropped: res.dropped,
		heavySplit: res.heavySplit, split: res.split, heavyFailed: res.heavyFailed, failed: res.failed,
		fair: 1 / float64(len(res.hosts))}
	w.heavy = perHost(res.hosts, res.heavyAt)
	w.placed = perHost(res.hosts, res.placed)
	total := 0
	for _, n := range res.heavyServed {
		total += n
	}
	hot := 0
	for i, h := range res.hosts {
		w.heavyShare = append(w.heavyShare, ratio(res.heavyServed[h], total))
		more, tie := w.heavy[i] > w.heavy[hot], w.heavy[i] == w.heavy[hot]
		if !c.sticky {
			// A heavy session's requests spread: its first host means nothing.
			more, tie = false, true
		}
		if more || (tie && res.heavyServed[h] > res.heavyServed[res.hosts[hot]]) {
			hot = i
		}
	}
	w.hot = res.hosts[hot]
	w.hotShare = ratio(w.placed[hot], len(res.placed))
	var all, onHot, first, later []time.Duration
	for _, s := range res.ordinary {
		all = append(all, s.took)
		if s.host == w.hot {
			onHot = append(onHot, s.took)
		}
		if s.first {
			first = append(first, s.took)
		} else {
			later = append(later, s.took)
		}
	}
	w.requests, w.hotRequests = len(all), len(onHot)
	w.p50, w.p99 = quantile(all, 0.50), quantile(all, 0.99)
	w.hotP50, w.hotP99 = quantile(onHot, 0.50), quantile(onHot, 0.99)
	w.firstP50, w.firstP99 = quantile(first, 0.50), quantile(first, 0.99)
	w.laterP50, w.laterP99 = quantile(later, 0.50), quantile(later, 0.99)
	return w
}

// perHost counts the names per host, in the hosts' order.
func perHost(hosts, names []string) []int {
	out := make([]int, len(hosts))
	for _, n := range names {
		if i := slices.Index(hosts, n); i >= 0 {
			out[i]++
		}
	}
	return out
}

func ratio(n, of int) float64 {
	if of == 0 {
		return 0
	}
	return float64(n) / float64(of)
}

// quantile is the nearest-rank q-quantile (0 for no samples).
func quantile(d []time.Duration, q float64) time.Duration {
	if len(d) == 0 {
		return 0
	}
	s := slices.Clone(d)
	slices.Sort(s)
	i := int(q*float64(len(s))+0.5) - 1
	return s[max(0, min(i, len(s)-1))]
}

// progress is the row in one line, for the terminal while the run goes on.
func (w row) progress() string {
	return fmt.Sprintf("round %d %-36s heavy %s  new %s  hot %s %.0f%%  p50 %v p99 %v  first %v / %v  later %v / %v  hot p50 %v p99 %v  split %d/%d  failed %d/%d",
		w.round, w.config.name, joinInts(w.heavy), joinInts(w.placed), w.hot, 100*w.hotShare,
		ms(w.p50), ms(w.p99), ms(w.firstP50), ms(w.firstP99), ms(w.laterP50), ms(w.laterP99),
		w.hotMS(w.hotP50), w.hotMS(w.hotP99), w.heavySplit, w.split, w.heavyFailed, w.failed)
}

// render is the Markdown table of every row, configurations in order and
// rounds within each, and the line that says how it was made.
func render(st settings, rows []row, configs []config) string {
	slices.SortStableFunc(rows, func(a, b row) int {
		return cmp.Compare(slices.IndexFunc(configs, func(c config) bool { return c.name == a.config.name }),
			slices.IndexFunc(configs, func(c config) bool { return c.name == b.config.name }))
	})
	var b strings.Builder
	hosts := ""
	if len(rows) > 0 {
		hosts = strings.Join(rows[0].hosts, " / ")
	}
	fmt.Fprintf(&b, "| configuration | round | heavy sessions (%s) | new sessions (%s) | hot host's share of new sessions (fair %.0f%%) | p50 / p99 | p50 / p99 of first requests | p50 / p99 of later requests | p50 / p99 on the hot host | sessions on two hosts (heavy, ordinary) | failed requests (heavy, ordinary) |\n",
		hosts, hosts, 100/float64(st.backends))
	b.WriteString("|---|---|---|---|---|---|---|---|---|---|---|\n")
	for _, w := range rows {
		heavy := joinInts(w.heavy)
		if !w.config.sticky {
			shares := make([]string, len(w.heavyShare))
			for i, s := range w.heavyShare {
				shares[i] = fmt.Sprintf("%.0f%%", 100*s)
			}
			heavy = "not sticky: " + strings.Join(shares, " / ") + " of their requests"
		} else if w.dropped > 0 {
			heavy += fmt.Sprintf(" (%d dropped)", w.dropped)
		}
		fmt.Fprintf(&b, "| %s | %d | %s | %s | %s %.0f%% (%.2f×) | %s / %s | %s / %s | %s / %s | %s / %s | %d, %d | %d, %d |\n",
			w.config.name, w.round, heavy, joinInts(w.placed), w.hot, 100*w.hotShare, w.hotShare/w.fair,
			ms(w.p50), ms(w.p99), ms(w.firstP50), ms(w.firstP99), ms(w.laterP50), ms(w.laterP99), w.hotMS(w.hotP50), w.hotMS(w.hotP99), w.heavySplit, w.split, w.heavyFailed, w.failed)
	}
	layout := "where they landed by chance"
	if st.layout != nil {
		layout = "drawn until they landed " + joinInts(st.layout) + " (sessions that did not fit dropped)"
	}
	envoys := ""
	if st.envoys == 2 {
		envoys = "Two Envoys, the heavy sessions through one (A) and the ordinary sessions through the other (B), a `load` block reading both. "
	}
	fmt.Fprintf(&b, "\n%d backends, each working on %d requests at a time for %v each (the rest wait in line); %d heavy sessions "+
		"of %d requests in flight each, %s; then %d ordinary sessions arriving evenly over %v, %d requests each %v apart "+
		"(latency from send to the end of the answer, ordinary requests only; a session's first request is the one that places it). %s%s.\n",
		st.backends, st.capacity, st.work, st.heavy, st.inFlight, layout, st.sessions, st.over, st.requests, st.gap,
		envoys, machine())
	return b.String()
}

// machine is the closing words of a report's last line: Envoy's release,
// the cores and the Go release.
func machine() string {
	return fmt.Sprintf("Envoy %s with one worker; %d cores (%s), %s", envoyRelease(), runtime.NumCPU(), cpuModel(), runtime.Version())
}

func joinInts(n []int) string {
	s := make([]string, len(n))
	for i, v := range n {
		s[i] = fmt.Sprint(v)
	}
	return strings.Join(s, " / ")
}

// ms writes a latency in milliseconds, one decimal.
// hotMS is a latency of the hot host's ordinary requests, or "none" when
// no ordinary session was placed there (a 0 would read as a fast host).
func (w row) hotMS(d time.Duration) string {
	if w.hotRequests == 0 {
		return "none"
	}
	return ms(d)
}

func ms(d time.Duration) string { return fmt.Sprintf("%.1f ms", float64(d)/float64(time.Millisecond)) }

var releaseRE = regexp.MustCompile(`/(\d+\.\d+\.\d+)/`)

// envoyRelease is the release of the Envoy the stack runs.
func envoyRelease() string {
	bin, err := launch.EnvoyBinary()
	if err != nil {
		return "(unknown release)"
	}
	out, _ := exec.Command(bin, "--version").Output()
	if m := releaseRE.FindSubmatch(out); m != nil {
		return string(m[1])
	}
	return "(unknown release)"
}

// cpuModel is the first model name /proc/cpuinfo gives.
func cpuModel() string {
	data, _ := os.ReadFile("/proc/cpuinfo")
	for _, line := range strings.Split(string(data), "\n") {
		if k, v, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(k) == "model name" {
			return strings.TrimSpace(v)
		}
	}
	return "unknown CPU"
}

// marks are the markers around a generated table in the -out file, one
// pair per scenario (name: heavy, heavy-envoys, heavy-join); the text
// around them is written by hand and kept.
func marks(name string) (begin, end string) {
	return "<!-- " + name + ":begin -->", "<!-- " + name + ":end -->"
}

// splice puts report between the markers named name of the file at path.
func splice(path, name, report string) error {
	data, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	beginMark, endMark := marks(name)
	text := string(data)
	a, z := strings.Index(text, beginMark), strings.Index(text, endMark)
	if a < 0 || z < a {
		return fmt.Errorf("%s has no %s … %s markers", path, beginMark, endMark)
	}
	return os.WriteFile(path, []byte(text[:a+len(beginMark)]+"\n"+report+text[z:]), 0o644)
}
