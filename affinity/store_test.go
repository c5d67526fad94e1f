package affinity

import (
	"fmt"
	"runtime"
	"testing"
	"time"
)

func TestMemoryStore(t *testing.T) {
	s := NewMemoryStore(3, time.Minute)
	steps := []struct {
		name  string
		do    func()
		at    time.Duration
		want  map[string]int
		count int
	}{
		{"counted per host", func() {
			s.Seen("p", "a", "h1", t0)
			s.Seen("p", "b", "h1", t0)
			s.Seen("p", "c", "h2", t0.Add(10*time.Second))
		}, 10 * time.Second, map[string]int{"h1": 2, "h2": 1}, 3},
		{"the least recently seen dropped beyond the size", func() { s.Seen("q", "a", "h9", t0.Add(20*time.Second)) },
			20 * time.Second, map[string]int{"h1": 1, "h2": 1}, 3},
		{"a session that moved counts on its new host", func() { s.Seen("p", "b", "h2", t0.Add(30*time.Second)) },
			30 * time.Second, map[string]int{"h2": 2}, 3},
		{"idle sessions expire (one of pool q remains)", func() {}, 75 * time.Second, map[string]int{"h2": 1}, 2},
	}
	for _, st := range steps {
		st.do()
		got := map[string]int{}
		s.Load("p", t0.Add(st.at), got)
		if fmt.Sprint(got) != fmt.Sprint(st.want) || s.Len() != st.count {
			t.Errorf("%s: %v (%d tracked), want %v (%d)", st.name, got, s.Len(), st.want, st.count)
		}
	}
}

// TestMemoryStoreBytesPerSession measures the heap a tracked session costs.
func TestMemoryStoreBytesPerSession(t *testing.T) {
	const n = 100_000
	ids := make([]string, n)
	for i := range ids {
		ids[i] = NewSessionID()
	}
	hosts := []string{"web-1", "web-2", "web-3"}
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	s := NewMemoryStore(n, time.Hour)
	for i, id := range ids {
		s.Seen("default", id, hosts[i%3], t0)
	}
	runtime.GC()
	runtime.ReadMemStats(&after)
	per := float64(after.HeapAlloc-before.HeapAlloc) / n
	t.Logf("memory store: %.0f bytes per tracked session (%d sessions)", per, s.Len())
	if per > 150 {
		t.Errorf("%.0f bytes per tracked session, want at most 150", per)
	}
	runtime.KeepAlive(s)
}
