package redisstore

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/envoy-affinity/envoy-affinity/affinity"
	"github.com/envoy-affinity/envoy-affinity/internal/launch"
)

// fakeEngine records the operator states the upkeep puts in force.
type fakeEngine struct {
	snap *affinity.Snapshot
	mu   sync.Mutex
	ops  map[string]map[string]affinity.OperatorState
}

func (f *fakeEngine) Snapshot() *affinity.Snapshot { return f.snap }

func (f *fakeEngine) SetOperatorStates(m map[string]map[string]affinity.OperatorState) {
	f.mu.Lock()
	f.ops = m
	f.mu.Unlock()
}

func (f *fakeEngine) state(pool, host string) (affinity.OperatorState, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	st, ok := f.ops[pool][host]
	return st, ok
}

func newEngine(t *testing.T) *fakeEngine {
	t.Helper()
	cfg, err := affinity.ParseConfig("c.yaml", []byte("keys: {env: K}\npools:\n  - name: app\n    hosts: [{address: '127.0.0.1:1', name: h1}, {address: '127.0.0.1:2', name: h2}]\n"))
	if err != nil {
		t.Fatal(err)
	}
	ring, err := affinity.ParseKeyring("k1:" + "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY")
	if err != nil {
		t.Fatal(err)
	}
	return &fakeEngine{snap: cfg.Build(ring)}
}

func startRedis(t *testing.T, extra ...string) *launch.Redis {
	t.Helper()
	r, err := launch.StartRedis(context.Background(), t.TempDir(), extra...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(r.Stop)
	return r
}

func redisConfig(mode string, addrs ...string) affinity.RedisConfig {
	return affinity.RedisConfig{Mode: mode, Addresses: addrs, KeyPrefix: "test:", Timeout: 200 * time.Millisecond,
		TouchInterval: time.Minute, SyncInterval: 50 * time.Millisecond}
}

// replica starts a store as one replica of the service would.
func replica(t *testing.T, cfg affinity.RedisConfig, e *fakeEngine) *Store {
	t.Helper()
	s, err := New(cfg, affinity.NewMemoryStore(1000, time.Hour), time.Hour, Options{Logger: slog.New(slog.NewTextHandler(t.Output(), nil))})
	if err != nil {
		t.Fatal(err)
	}
	s.Start(e)
	t.Cleanup(s.Close)
	return s
}

func eventually(t *testing.T, what string, cond func() error) {
	t.Helper()
	if err := launch.Eventually(context.Background(), 10*time.Second, cond); err != nil {
		t.Fatalf("%s: %v", what, err)
	}
}

func TestClaimsAgreeAcrossReplicas(t *testing.T) {
	r := startRedis(t)
	cfg := redisConfig(affinity.RedisSingle, r.Addr())
	e := newEngine(t)
	a, b, c := replica(t, cfg, e), replica(t, cfg, e), replica(t, cfg, e)
	if !a.Shared() {
		t.Fatal("not shared after Start with Redis up")
	}
	now := time.Now()

	host, bound := a.Claim("app", "h:alice", now, func() string { return "h1" })
	if host != "h1" || bound {
		t.Fatalf("first claim: %s %v", host, bound)
	}
	// Another replica placing the same key elsewhere (its loads differ)
	// gets the first binding.
	if host, bound = b.Claim("app", "h:alice", now, func() string { return "h2" }); host != "h1" || !bound {
		t.Fatalf("second replica's claim: %s %v", host, bound)
	}
	if host, ok := c.Binding("app", "h:alice", now); host != "h1" || !ok {
		t.Fatalf("third replica reads %s %v", host, ok)
	}

	// Many replicas claiming new keys at once: one binding per key.
	const keys = 200
	var wg sync.WaitGroup
	got := make([][keys]string, 3)
	for i, s := range []*Store{a, b, c} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for k := range keys {
				got[i][k], _ = s.Claim("app", "h:k"+strconv.Itoa(k), now, func() string { return "h" + strconv.Itoa(i+1) })
			}
		}()
	}
	wg.Wait()
	for k := range keys {
		if got[0][k] != got[1][k] || got[1][k] != got[2][k] {
			t.Fatalf("key %d bound to %s, %s and %s", k, got[0][k], got[1][k], got[2][k])
		}
	}
	if n := a.Counters().LocalAnswers.Load() + b.Counters().LocalAnswers.Load(); n != 0 {
		t.Fatalf("%d local answers with Redis up", n)
	}
	// Keys are hashed: an application cookie is not stored as such.
	if keys, _ := r.CLI("KEYS", "*alice*"); keys != "" {
		t.Fatalf("key stored in clear: %s", keys)
	}
}

// TestUnbindReachesEveryReplica: a key forgotten on one replica (the
// session it named ended) is forgotten by the others, also when Redis was
// down at the time.
func TestUnbindReachesEveryReplica(t *testing.T) {
	r := startRedis(t)
	cfg := redisConfig(affinity.RedisSingle, r.Addr())
	e := newEngine(t)
	a, b := replica(t, cfg, e), replica(t, cfg, e)
	now := time.Now()
	for _, key := range []string{"u:s-1", "u:s-2"} {
		a.Bind("app", key, "h1", now)
		eventually(t, "bound in Redis", func() error {
			if host, ok := b.Binding("app", key, now); !ok || host != "h1" {
				return fmt.Errorf("the other replica reads %q %v", host, ok)
			}
			return nil
		})
	}
	a.Unbind("app", "u:s-1")
	// Deleted by the writer, not on the request's path: each replica's
	// cached copy goes when Redis says the key changed.
	for i, s := range []*Store{a, b} {
		eventually(t, "forgotten by every replica", func() error {
			if host, ok := s.Binding("app", "u:s-1", now); ok {
				return fmt.Errorf("replica %d still reads %q", i, host)
			}
			return nil
		})
	}

	// Forgotten while Redis does not answer (paused, so it keeps its
	// data): deleted there once it answers again.
	if err := r.Pause(); err != nil {
		t.Fatal(err)
	}
	a.Unbind("app", "u:s-2")
	eventually(t, "local while Redis is paused", func() error {
		if a.Shared() {
			return fmt.Errorf("still shared")
		}
		return nil
	})
	if _, ok := a.Binding("app", "u:s-2", now); ok {
		t.Fatal("still bound locally with Redis paused")
	}
	if err := r.Resume(); err != nil {
		t.Fatal(err)
	}
	eventually(t, "deleted in Redis", func() error {
		if v, err := r.CLI("EXISTS", BindingKey(cfg.KeyPrefix, "app", "u:s-2")); err != nil || v != "0" {
			return fmt.Errorf("EXISTS: %q %v", v, err)
		}
		return nil
	})
}

func TestRebindingIsNotUndoneByATouch(t *testing.T) {
	r := startRedis(t)
	cfg := redisConfig(affinity.RedisSingle, r.Addr())
	cfg.TouchInterval = time.Millisecond
	e := newEngine(t)
	a, b := replica(t, cfg, e), replica(t, cfg, e)
	now := time.Now()
	rkey := BindingKey(cfg.KeyPrefix, "app", "h:bob")

	a.Claim("app", "h:bob", now, func() string { return "h1" })
	// b reads h1, then a re-binds the key to h2 (h1 left).
	if host, _ := b.Binding("app", "h:bob", now); host != "h1" {
		t.Fatalf("b reads %s", host)
	}
	a.Bind("app", "h:bob", "h2", now)
	eventually(t, "re-binding written", func() error {
		if v, _ := r.CLI("GET", rkey); v != "h2" {
			return fmt.Errorf("GET = %q", v)
		}
		return nil
	})
	// b's late touch of the binding it had read pushes the expiry back
	// and leaves the host alone.
	ttl0, _ := r.CLI("PTTL", rkey)
	b.Bind("app", "h:bob", "h1", now.Add(time.Second))
	eventually(t, "touch written", func() error {
		if w := b.Counters().Writes.Load(); w == 0 {
			return fmt.Errorf("no write from b")
		}
		if ttl, _ := r.CLI("PTTL", rkey); ttl == ttl0 {
			return fmt.Errorf("expiry not pushed back (PTTL %s)", ttl)
		}
		return nil
	})
	if v, _ := r.CLI("GET", rkey); v != "h2" {
		t.Fatalf("after b's touch the key is bound to %q", v)
	}
}

// A key in use is touched about once per interval by the whole fleet, not
// once per replica.
func TestTouchedOncePerInterval(t *testing.T) {
	r := startRedis(t)
	cfg := redisConfig(affinity.RedisSingle, r.Addr())
	e := newEngine(t)
	a, b := replica(t, cfg, e), replica(t, cfg, e)
	now := time.Now()
	a.Claim("app", "h:dave", now, func() string { return "h1" })
	host, _ := b.Claim("app", "h:dave", now.Add(time.Second), func() string { return "h2" })
	writes := b.Counters().Writes.Load()
	b.Bind("app", "h:dave", host, now.Add(2*time.Second))
	b.Bind("app", "h:dave", host, now.Add(cfg.TouchInterval/2))
	if w := b.Counters().Writes.Load(); w != writes {
		t.Fatalf("b touched a key a touched %v ago (%d writes)", cfg.TouchInterval/2, w-writes)
	}
	// Past the interval, the first use touches it.
	b.Bind("app", "h:dave", host, now.Add(cfg.TouchInterval+5*time.Second))
	eventually(t, "touch written", func() error {
		if w := b.Counters().Writes.Load(); w != writes+1 {
			return fmt.Errorf("%d writes, want 1", w-writes)
		}
		return nil
	})
}

func TestCookieSessionsNeverReachRedis(t *testing.T) {
	r := startRedis(t)
	cfg := redisConfig(affinity.RedisSingle, r.Addr())
	a := replica(t, cfg, newEngine(t))
	before := r.Info("commandstats", "cmdstat_get") + r.Info("commandstats", "cmdstat_set")
	reads, writes := a.Counters().Reads.Load(), a.Counters().Writes.Load()
	now := time.Now()
	for i := range 500 {
		a.Seen("app", "session-"+strconv.Itoa(i), "h1", now)
	}
	load := map[string]int{}
	a.Load("app", now, load)
	if load["h1"] != 500 {
		t.Fatalf("load %v", load)
	}
	after := r.Info("commandstats", "cmdstat_get") + r.Info("commandstats", "cmdstat_set")
	if before != after || a.Counters().Reads.Load() != reads || a.Counters().Writes.Load() != writes {
		t.Fatalf("cookie sessions reached Redis: GET/SET stats %q → %q, reads %d → %d, writes %d → %d",
			before, after, reads, a.Counters().Reads.Load(), writes, a.Counters().Writes.Load())
	}
}

func TestLoadsAddUpAcrossReplicas(t *testing.T) {
	r := startRedis(t)
	cfg := redisConfig(affinity.RedisSingle, r.Addr())
	e := newEngine(t)
	a, b := replica(t, cfg, e), replica(t, cfg, e)
	now := time.Now()
	for i := range 5 {
		a.Seen("app", "a"+strconv.Itoa(i), "h1", now)
	}
	for i := range 3 {
		b.Seen("app", "b"+strconv.Itoa(i), "h2", now)
	}
	want := map[string]int{"h1": 5, "h2": 3}
	for name, s := range map[string]*Store{"a": a, "b": b} {
		eventually(t, name+" sees the fleet's sessions", func() error {
			load := map[string]int{}
			s.Load("app", time.Now(), load)
			if fmt.Sprint(load) != fmt.Sprint(want) {
				return fmt.Errorf("load %v, want %v", load, want)
			}
			return nil
		})
	}
	// A replica that stops publishing drops out after three intervals.
	b.Close()
	eventually(t, "a forgets b", func() error {
		load := map[string]int{}
		a.Load("app", time.Now(), load)
		if load["h2"] != 0 {
			return fmt.Errorf("load %v", load)
		}
		return nil
	})
}

func TestOperatorStatesReachEveryReplica(t *testing.T) {
	r := startRedis(t)
	cfg := redisConfig(affinity.RedisSingle, r.Addr())
	ea, eb := newEngine(t), newEngine(t)
	a := replica(t, cfg, ea)
	replica(t, cfg, eb)
	deadline := time.Now().Add(time.Hour).Truncate(time.Second)
	if err := a.PutOperatorState("app", "h2", affinity.OperatorState{Draining: true, Deadline: deadline}); err != nil {
		t.Fatal(err)
	}
	eventually(t, "b drains h2", func() error {
		if st, ok := eb.state("app", "h2"); !ok || !st.Draining || !st.Deadline.Equal(deadline) {
			return fmt.Errorf("b: %+v %v", st, ok)
		}
		return nil
	})
	// A replica started later has it from its first request on.
	ec := newEngine(t)
	replica(t, cfg, ec)
	if st, ok := ec.state("app", "h2"); !ok || !st.Draining {
		t.Fatalf("new replica: %+v %v", st, ok)
	}
	if err := a.PutOperatorState("app", "h2", affinity.OperatorState{}); err != nil {
		t.Fatal(err)
	}
	eventually(t, "b undrains h2", func() error {
		if st, ok := eb.state("app", "h2"); !ok || st.Draining {
			return fmt.Errorf("b: %+v %v", st, ok)
		}
		return nil
	})
}

func TestRedisDownAnswersLocallyAndCatchesUp(t *testing.T) {
	r := startRedis(t)
	cfg := redisConfig(affinity.RedisSingle, r.Addr())
	e := newEngine(t)
	a := replica(t, cfg, e)
	now := time.Now()
	a.Claim("app", "h:before", now, func() string { return "h1" })

	r.Kill()
	// The first request after the crash finds out; none fails.
	host, bound := a.Claim("app", "h:during", now, func() string { return "h2" })
	if host != "h2" || bound {
		t.Fatalf("claim while down: %s %v", host, bound)
	}
	if a.Shared() {
		t.Fatal("still shared with Redis down")
	}
	// Known keys are answered from memory.
	if host, bound := a.Claim("app", "h:before", now, func() string { return "h2" }); host != "h1" || !bound {
		t.Fatalf("known key while down: %s %v", host, bound)
	}
	if err := a.PutOperatorState("app", "h1", affinity.OperatorState{Draining: true, Deadline: now.Add(time.Hour)}); err == nil {
		t.Fatal("an operator change with Redis down reported as shared")
	}
	if a.Counters().Outages.Load() != 1 {
		t.Fatalf("outages %d", a.Counters().Outages.Load())
	}

	// Redis comes back empty at the same address: the replica returns to
	// shared mode by itself and writes back what it decided meanwhile.
	if err := r.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	eventually(t, "shared again", func() error {
		if !a.Shared() {
			return fmt.Errorf("still local")
		}
		return nil
	})
	if v, _ := r.CLI("GET", BindingKey(cfg.KeyPrefix, "app", "h:during")); v != "h2" {
		t.Fatalf("binding made while down: %q in Redis", v)
	}
	if v, _ := r.CLI("HGET", cfg.KeyPrefix+"o", "app/h1"); v == "" {
		t.Fatal("drain made while down not written back")
	}
	b := replica(t, cfg, newEngine(t))
	if host, bound := b.Claim("app", "h:during", now, func() string { return "h1" }); host != "h2" || !bound {
		t.Fatalf("another replica after the outage: %s %v", host, bound)
	}
}

func TestRedisThatLostItsDataIsRefilled(t *testing.T) {
	r := startRedis(t)
	cfg := redisConfig(affinity.RedisSingle, r.Addr())
	a := replica(t, cfg, newEngine(t))
	now := time.Now()
	a.Claim("app", "h:carol", now, func() string { return "h2" })
	a.Bind("app", "c:app-cookie", "h1", now)
	rkey := BindingKey(cfg.KeyPrefix, "app", "c:app-cookie")
	eventually(t, "learned cookie written", func() error {
		if v, _ := r.CLI("GET", rkey); v != "h1" {
			return fmt.Errorf("GET = %q", v)
		}
		return nil
	})
	if out, err := r.CLI("FLUSHALL"); err != nil {
		t.Fatal(out, err)
	}
	// A key this replica knows is answered from its memory, not placed anew.
	if host, bound := a.Claim("app", "h:carol", now, func() string { return "h1" }); host != "h2" || !bound {
		t.Fatalf("claim after the loss: %s %v", host, bound)
	}
	if host, ok := a.Binding("app", "c:app-cookie", now); host != "h1" || !ok {
		t.Fatalf("learned cookie after the loss: %s %v", host, ok)
	}
	eventually(t, "written back", func() error {
		if v, _ := r.CLI("GET", rkey); v != "h1" {
			return fmt.Errorf("learned cookie: GET = %q", v)
		}
		if v, _ := r.CLI("GET", BindingKey(cfg.KeyPrefix, "app", "h:carol")); v != "h2" {
			return fmt.Errorf("header key: GET = %q", v)
		}
		return nil
	})
	if a.Counters().Restored.Load() != 2 {
		t.Fatalf("restored %d", a.Counters().Restored.Load())
	}
}

// logLines counts the store's log messages.
type logLines struct {
	mu   sync.Mutex
	msgs []string
}

func (l *logLines) Enabled(context.Context, slog.Level) bool { return true }
func (l *logLines) Handle(_ context.Context, r slog.Record) error {
	l.mu.Lock()
	l.msgs = append(l.msgs, r.Message)
	l.mu.Unlock()
	return nil
}
func (l *logLines) WithAttrs([]slog.Attr) slog.Handler { return l }
func (l *logLines) WithGroup(string) slog.Handler      { return l }

func (l *logLines) count(prefix string) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	n := 0
	for _, m := range l.msgs {
		if strings.HasPrefix(m, prefix) {
			n++
		}
	}
	return n
}

// TestSlowRedis: a Redis that stops answering (its process paused) costs a
// request at most the timeout; the replica answers from memory, logs the
// change once, and returns to shared mode by itself when Redis answers.
func TestSlowRedis(t *testing.T) {
	r := startRedis(t)
	cfg := redisConfig(affinity.RedisSingle, r.Addr())
	cfg.Timeout = 20 * time.Millisecond
	logs := &logLines{}
	s, err := New(cfg, affinity.NewMemoryStore(1000, time.Hour), time.Hour, Options{Logger: slog.New(logs)})
	if err != nil {
		t.Fatal(err)
	}
	s.Start(newEngine(t))
	t.Cleanup(s.Close)
	now := time.Now()
	s.Claim("app", "h:gina", now, func() string { return "h1" })
	if err := r.Pause(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = r.Resume() })
	local := s.Counters().LocalAnswers.Load()
	for i := range 20 {
		if host, _ := s.Claim("app", "h:gina", now, func() string { return "h2" }); host != "h1" {
			t.Fatalf("claim %d while Redis is paused: %s", i, host)
		}
		s.Claim("app", "h:new-"+strconv.Itoa(i), now, func() string { return "h2" })
	}
	// Every claim was answered from memory, and at most the first waited
	// for Redis (its context's deadline is the timeout): the others found
	// the store local.
	if s.Shared() || s.Counters().LocalAnswers.Load()-local != 40 || s.Counters().Errors.Load() > 1 {
		t.Fatalf("shared %v, %d local answers of 40, %d commands timed out", s.Shared(), s.Counters().LocalAnswers.Load()-local, s.Counters().Errors.Load())
	}
	if err := r.Resume(); err != nil {
		t.Fatal(err)
	}
	eventually(t, "shared again", func() error {
		if !s.Shared() {
			return fmt.Errorf("still local")
		}
		return nil
	})
	eventually(t, "written back", func() error {
		if v, _ := r.CLI("GET", BindingKey(cfg.KeyPrefix, "app", "h:new-19")); v != "h2" {
			return fmt.Errorf("GET = %q", v)
		}
		return nil
	})
	if down, up := logs.count("redis unreachable"), logs.count("redis reachable"); down != 1 || up != 2 {
		t.Fatalf("logged %d times unreachable and %d reachable (start included), want 1 and 2: %q", down, up, logs.msgs)
	}
}

// TestKeyPrefixesKeepDeploymentsApart: two deployments sharing a server
// bind the same key independently.
func TestKeyPrefixesKeepDeploymentsApart(t *testing.T) {
	r := startRedis(t)
	blue, green := redisConfig(affinity.RedisSingle, r.Addr()), redisConfig(affinity.RedisSingle, r.Addr())
	blue.KeyPrefix, green.KeyPrefix = "blue:", "green:"
	a, b := replica(t, blue, newEngine(t)), replica(t, green, newEngine(t))
	now := time.Now()
	a.Claim("app", "h:hana", now, func() string { return "h1" })
	if host, bound := b.Claim("app", "h:hana", now, func() string { return "h2" }); host != "h2" || bound {
		t.Fatalf("the other deployment got %s %v", host, bound)
	}
	if keys, _ := r.CLI("KEYS", "*"); strings.Count(keys, "blue:b:") != 1 || strings.Count(keys, "green:b:") != 1 {
		t.Fatalf("keys:\n%s", keys)
	}
}

func TestCluster(t *testing.T) {
	c, err := launch.StartRedisCluster(context.Background(), t.TempDir(), 3, 0, "--cluster-require-full-coverage", "no")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Stop)
	cfg := redisConfig(affinity.RedisCluster, c.Addrs()[0])
	// A dead node's keys wait for the whole timeout.
	cfg.Timeout = 100 * time.Millisecond
	e := newEngine(t)
	a, b := replica(t, cfg, e), replica(t, cfg, e)
	now := time.Now()
	const keys = 30
	for k := range keys {
		a.Claim("app", "h:"+strconv.Itoa(k), now, func() string { return "h" + strconv.Itoa(1+k%2) })
	}
	for k := range keys {
		want := "h" + strconv.Itoa(1+k%2)
		host, bound := b.Claim("app", "h:"+strconv.Itoa(k), now, func() string { return "nowhere" })
		if host != want || !bound {
			t.Fatalf("key %d: %s %v", k, host, bound)
		}
		b.Bind("app", "h:"+strconv.Itoa(k), host, now) // as the engine keeps a pinned key
	}
	// One node dies: its keys are answered from memory, the others' still
	// from the cluster, and the store stays shared.
	c.Nodes[2].Kill()
	for k := range keys {
		want := "h" + strconv.Itoa(1+k%2)
		if host, _ := b.Claim("app", "h:"+strconv.Itoa(k), now, func() string { return "nowhere" }); host != want {
			t.Fatalf("key %d with a node down: %s", k, host)
		}
	}
	if b.Counters().LocalAnswers.Load() == 0 || b.Counters().LocalAnswers.Load() == keys {
		t.Fatalf("%d of %d answers local with one of three nodes down", b.Counters().LocalAnswers.Load(), keys)
	}
	if !b.Shared() {
		t.Fatal("one node down switched the whole store to local")
	}
}

// TestSecuredRedis: ACL user and password read from files, TLS with the
// server's CA, and TLS with a client certificate the server requires; a
// wrong password leaves the replica answering from its memory.
func TestSecuredRedis(t *testing.T) {
	dir := t.TempDir()
	write := func(name string, data []byte) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, data, 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	ca, err := launch.NewCA("redis-test-ca")
	if err != nil {
		t.Fatal(err)
	}
	server, err := ca.Server("localhost")
	if err != nil {
		t.Fatal(err)
	}
	client, err := ca.Client("envoy-affinity")
	if err != nil {
		t.Fatal(err)
	}
	caFile, certFile, keyFile := write("ca.pem", ca.PEM), write("server.pem", server.CertPEM), write("server.key", server.KeyPEM)
	clientCert, clientKey := write("client.pem", client.CertPEM), write("client.key", client.KeyPEM)
	user, pass, wrong := write("user", []byte("alice\n")), write("pass", []byte("s3cret\n")), write("wrong", []byte("guess\n"))
	acl := []string{"--user", "default", "off", "--user", "alice", "on", ">s3cret", "~*", "&*", "+@all"}
	tlsArgs := func(clients string) []string {
		return []string{"--tls-cert-file", certFile, "--tls-key-file", keyFile, "--tls-ca-cert-file", caFile, "--tls-auth-clients", clients}
	}
	tests := []struct {
		name   string
		server launch.RedisOptions
		config func(*affinity.RedisConfig)
		shared bool
	}{
		{"ACL user and password from files", launch.RedisOptions{Args: acl, CLI: []string{"--user", "alice", "--pass", "s3cret"}},
			func(c *affinity.RedisConfig) { c.UsernameFile, c.PasswordFile = user, pass }, true},
		{"wrong password", launch.RedisOptions{Args: acl, CLI: []string{"--user", "alice", "--pass", "s3cret"}},
			func(c *affinity.RedisConfig) { c.Username, c.PasswordFile = "alice", wrong }, false},
		{"TLS", launch.RedisOptions{TLS: true, Args: tlsArgs("no"), CLI: []string{"--tls", "--cacert", caFile}},
			func(c *affinity.RedisConfig) { c.TLS = &affinity.RedisTLSConfig{CAFile: caFile} }, true},
		{"TLS without the CA", launch.RedisOptions{TLS: true, Args: tlsArgs("no"), CLI: []string{"--tls", "--cacert", caFile}},
			func(c *affinity.RedisConfig) { c.TLS = &affinity.RedisTLSConfig{} }, false},
		{"mutual TLS", launch.RedisOptions{TLS: true, Args: tlsArgs("yes"), CLI: []string{"--tls", "--cacert", caFile, "--cert", clientCert, "--key", clientKey}},
			func(c *affinity.RedisConfig) {
				c.TLS = &affinity.RedisTLSConfig{CAFile: caFile, CertFile: clientCert, KeyFile: clientKey}
			}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r, err := launch.StartRedisWith(context.Background(), t.TempDir(), tt.server)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(r.Stop)
			cfg := redisConfig(affinity.RedisSingle, r.Addr())
			tt.config(&cfg)
			s := replica(t, cfg, newEngine(t))
			if s.Shared() != tt.shared {
				t.Fatalf("shared = %v, want %v", s.Shared(), tt.shared)
			}
			host, _ := s.Claim("app", "h:erin", time.Now(), func() string { return "h2" })
			if host != "h2" {
				t.Fatalf("claim: %s", host)
			}
			got, _ := r.CLI("GET", BindingKey(cfg.KeyPrefix, "app", "h:erin"))
			if want := map[bool]string{true: "h2", false: ""}[tt.shared]; got != want {
				t.Fatalf("Redis holds %q, want %q", got, want)
			}
		})
	}
}

// TestSentinel: with mode sentinel the store finds the master through the
// Sentinels.
func TestSentinel(t *testing.T) {
	master := startRedis(t)
	sentinel, err := launch.StartRedisWith(context.Background(), t.TempDir(), launch.RedisOptions{
		Sentinel: fmt.Sprintf("sentinel monitor main 127.0.0.1 %d 1\nsentinel down-after-milliseconds main 1000\n", master.Port)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(sentinel.Stop)
	cfg := redisConfig(affinity.RedisSentinel, sentinel.Addr())
	cfg.MasterName = "main"
	s := replica(t, cfg, newEngine(t))
	if !s.Shared() {
		t.Fatal("not shared through the Sentinel")
	}
	s.Claim("app", "h:frank", time.Now(), func() string { return "h1" })
	if got, _ := master.CLI("GET", BindingKey(cfg.KeyPrefix, "app", "h:frank")); got != "h1" {
		t.Fatalf("the master holds %q", got)
	}
}
