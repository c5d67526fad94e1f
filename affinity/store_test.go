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

// countingStore counts the calls a decision makes to the key bindings.
type countingStore struct {
	*MemoryStore
	bindingCalls int
}

func (c *countingStore) Binding(pool, key string, now time.Time) (string, bool) {
	c.bindingCalls++
	return c.MemoryStore.Binding(pool, key, now)
}

func (c *countingStore) Claim(pool, key string, now time.Time, place func() string) (string, bool) {
	c.bindingCalls++
	return c.MemoryStore.Claim(pool, key, now, place)
}

func (c *countingStore) Bind(pool, key, host string, now time.Time) {
	c.bindingCalls++
	c.MemoryStore.Bind(pool, key, host, now)
}

// A cookie session's binding is its token: its decisions never ask the
// store for a binding (a shared store keeps Seen and Load local), in any
// mode, new, established, refreshed or re-bound; a header key's do.
func TestCookieSessionsNeverUseBindings(t *testing.T) {
	for _, mode := range []Mode{ModeVerified, ModeOpaque, ModeNative} {
		t.Run(string(mode), func(t *testing.T) {
			clock := &fixedClock{t: t0}
			sources := "    key_sources: [{type: cookie}, {type: header, name: x-user}]\n"
			if mode == ModeNative {
				sources = "" // Envoy's cookie only
			}
			snap := mustBuild(t, "keys: {env: K}\npools:\n  - mode: "+string(mode)+"\n    bounded_load: {}\n    session: {refresh_interval: 5m}\n"+
				sources+"    hosts: [{name: a, address: '127.0.0.1:1'}, {name: b, address: '127.0.0.2:1'}, {name: c, address: '127.0.0.3:1'}]\n")
			e := NewEngine(snap, clock.now)
			store := &countingStore{MemoryStore: NewMemoryStore(100, time.Hour)}
			e.SetStore(store)
			for range 20 {
				d := e.Decide(Request{Cluster: "app"})
				if mode == ModeNative {
					continue
				}
				cookie := cookieOf(t, d.SetCookie)
				e.Decide(Request{Cluster: "app", CookieHeaders: []string{cookie}})
				clock.t = clock.t.Add(6 * time.Minute) // expired: refreshed
				e.Decide(Request{Cluster: "app", CookieHeaders: []string{cookie}})
			}
			if store.bindingCalls != 0 {
				t.Fatalf("%d binding calls for cookie sessions", store.bindingCalls)
			}
			if mode != ModeNative {
				e.Decide(Request{Cluster: "app", Headers: mapHeaders{"x-user": "alice"}})
				if store.bindingCalls == 0 {
					t.Fatal("a header key made no binding call: the counter counts nothing")
				}
			}
		})
	}
}
