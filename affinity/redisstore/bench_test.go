package redisstore

import (
	"context"
	"os"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/envoy-affinity/envoy-affinity/affinity"
	"github.com/envoy-affinity/envoy-affinity/internal/launch"
)

// benchRedis is one redis-server for all benchmarks of a run, stopped by
// TestMain.
var benchRedis struct {
	once sync.Once
	dir  string
	r    *launch.Redis
	err  error
}

func TestMain(m *testing.M) {
	code := m.Run()
	if benchRedis.r != nil {
		benchRedis.r.Stop()
	}
	if benchRedis.dir != "" {
		os.RemoveAll(benchRedis.dir)
	}
	os.Exit(code)
}

func benchStore(b *testing.B) *Store {
	b.Helper()
	benchRedis.once.Do(func() {
		if benchRedis.dir, benchRedis.err = os.MkdirTemp("", "redisstore-bench-"); benchRedis.err != nil {
			return
		}
		benchRedis.r, benchRedis.err = launch.StartRedis(context.Background(), benchRedis.dir)
	})
	if benchRedis.err != nil {
		b.Fatal(benchRedis.err)
	}
	cfg := redisConfig(affinity.RedisSingle, benchRedis.r.Addr())
	cfg.Timeout = time.Second // measure Redis, not the fallback
	s, err := New(cfg, affinity.NewMemoryStore(affinity.DefaultMaxSessions, time.Hour), time.Hour, Options{})
	if err != nil {
		b.Fatal(err)
	}
	e := &fakeEngine{}
	e.snap = benchSnapshot(b)
	s.Start(e)
	b.Cleanup(s.Close)
	if !s.Shared() {
		b.Fatal("not shared")
	}
	return s
}

func benchSnapshot(b *testing.B) *affinity.Snapshot {
	b.Helper()
	cfg, err := affinity.ParseConfig("c.yaml", []byte("keys: {env: K}\npools:\n  - name: app\n    mode: opaque\n    key_sources: [{type: header, name: x-user}, {type: cookie}]\n"+
		"    hosts: [{address: '127.0.0.1:1', name: h1}, {address: '127.0.0.1:2', name: h2}, {address: '127.0.0.1:3', name: h3}]\n"))
	if err != nil {
		b.Fatal(err)
	}
	ring, err := affinity.ParseKeyring("k1:MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY")
	if err != nil {
		b.Fatal(err)
	}
	return cfg.Build(ring)
}

// latencies runs op from one caller and from 32 (as many concurrent
// streams of a busy Envoy), reporting the p50 and p99 of one call beside
// ns/op (the inverse of the throughput).
func latencies(b *testing.B, op func(i int)) {
	b.Helper()
	b.Run("c=1", func(b *testing.B) { measure(b, 1, op) })
	b.Run("c=32", func(b *testing.B) { measure(b, 32, op) })
}

func measure(b *testing.B, callers int, op func(i int)) {
	var mu sync.Mutex
	var all []time.Duration
	var n atomic.Int64
	b.ResetTimer()
	if callers == 1 {
		all = make([]time.Duration, 0, b.N)
		for i := range b.N {
			start := time.Now()
			op(i)
			all = append(all, time.Since(start))
		}
		b.StopTimer()
		report(b, all)
		return
	}
	b.SetParallelism(max(1, callers/runtime.GOMAXPROCS(0)))
	b.RunParallel(func(pb *testing.PB) {
		local := make([]time.Duration, 0, 1024)
		for pb.Next() {
			i := int(n.Add(1))
			start := time.Now()
			op(i)
			local = append(local, time.Since(start))
		}
		mu.Lock()
		all = append(all, local...)
		mu.Unlock()
	})
	b.StopTimer()
	report(b, all)
}

func report(b *testing.B, all []time.Duration) {
	slices.Sort(all)
	if len(all) > 0 {
		b.ReportMetric(float64(all[len(all)/2].Nanoseconds()), "p50-ns")
		b.ReportMetric(float64(all[len(all)*99/100].Nanoseconds()), "p99-ns")
	}
}

// BenchmarkStoreClaimNewKey: a key no replica has bound: one SET NX GET.
func BenchmarkStoreClaimNewKey(b *testing.B) {
	s := benchStore(b)
	now := time.Now()
	run := strconv.FormatInt(now.UnixNano(), 36)
	latencies(b, func(i int) {
		s.Claim("app", "h:new-"+run+"-"+strconv.Itoa(i), now, func() string { return "h1" })
	})
}

// BenchmarkStoreClaimKnownKey: a key this replica uses, read through the
// client-side cache (after the first read of each key).
func BenchmarkStoreClaimKnownKey(b *testing.B) {
	s := benchStore(b)
	now := time.Now()
	const keys = 10_000
	for i := range keys {
		s.Claim("app", "h:known-"+strconv.Itoa(i), now, func() string { return "h1" })
		s.Claim("app", "h:known-"+strconv.Itoa(i), now, func() string { return "h1" })
	}
	hits := s.Counters().CacheHits.Load()
	latencies(b, func(i int) {
		s.Claim("app", "h:known-"+strconv.Itoa(i%keys), now, func() string { return "h1" })
	})
	b.ReportMetric(float64(s.Counters().CacheHits.Load()-hits)/float64(b.N), "hits/op")
}

// BenchmarkStoreDecide: whole decisions of the engine with the shared
// store: a new header key, a known one, and an established cookie session
// (opaque mode: its token verified once, then from the engine's cache; it
// never reaches Redis).
func BenchmarkStoreDecide(b *testing.B) {
	s := benchStore(b)
	snap := benchSnapshot(b)
	e := affinity.NewEngine(snap, nil)
	e.SetStore(s)
	cookie, _, _ := strings.Cut(e.Decide(affinity.Request{Cluster: "app"}).SetCookie, ";")
	now := strconv.FormatInt(time.Now().UnixNano(), 36)
	b.Run("new-header-key", func(b *testing.B) {
		latencies(b, func(i int) {
			e.Decide(affinity.Request{Cluster: "app", Headers: header{"x-user": "new-" + now + "-" + strconv.Itoa(i)}})
		})
	})
	b.Run("known-header-key", func(b *testing.B) {
		for i := range 1000 {
			e.Decide(affinity.Request{Cluster: "app", Headers: header{"x-user": "known-" + strconv.Itoa(i)}})
			e.Decide(affinity.Request{Cluster: "app", Headers: header{"x-user": "known-" + strconv.Itoa(i)}})
		}
		latencies(b, func(i int) {
			e.Decide(affinity.Request{Cluster: "app", Headers: header{"x-user": "known-" + strconv.Itoa(i%1000)}})
		})
	})
	b.Run("established-cookie-memory-store", func(b *testing.B) {
		local := affinity.NewEngine(snap, nil)
		token, _, _ := strings.Cut(local.Decide(affinity.Request{Cluster: "app"}).SetCookie, ";")
		latencies(b, func(int) {
			local.Decide(affinity.Request{Cluster: "app", CookieHeaders: []string{token}})
		})
	})
	b.Run("established-cookie", func(b *testing.B) {
		reads, writes := s.Counters().Reads.Load(), s.Counters().Writes.Load()
		latencies(b, func(int) {
			e.Decide(affinity.Request{Cluster: "app", CookieHeaders: []string{cookie}})
		})
		if s.Counters().Reads.Load() != reads || s.Counters().Writes.Load() != writes {
			b.Fatalf("an established cookie session used Redis")
		}
	})
}

type header map[string]string

func (h header) Get(name string) (string, bool) { v, ok := h[name]; return v, ok }
