package e2e_test

import (
	"context"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/envoy-affinity/envoy-affinity/affinity/discovery"
	"github.com/envoy-affinity/envoy-affinity/affinity/redisstore"
	"github.com/envoy-affinity/envoy-affinity/internal/launch"
)

// TestLoadSignalFleet (verified mode, keys from a header): three replicas
// of the service share a Redis, and each reads both Envoys' requests in
// flight. One key holds requests in flight on its host, half through each
// Envoy: every replica reads the sum. New keys, the first request of each
// sent through both Envoys at once (two replicas may race to claim it),
// land away from the hot host, each on one host that answers every later
// request of the key, whichever replica decides it; Redis names that host.
func TestLoadSignalFleet(t *testing.T) {
	t.Parallel()
	redis := startRedis(t)
	f := newHeaderFleet(t, redis, &launch.Load{Interval: 100 * time.Millisecond})
	ctx := context.Background()
	hot := f.openHeader(t, "hot", 0)
	hotAddr := ""
	for _, b := range f.s.Backends {
		if b.Name == hot {
			hotAddr = b.Address()
		}
	}

	// The key is bound: each held request asks a replica, which pins it.
	const held = 12
	for _, g := range f.gateways {
		holdRequests(t, g+"/?hold=30s", held/2, "x-session-id", "hot")
	}
	const replicas = 3
	readings := func() ([]float64, error) {
		out := make([]float64, replicas)
		for i := range out {
			l, err := serviceLoadAt("http://127.0.0.1:"+strconv.Itoa(f.s.Replicas[i].AdminPort)+"/debug/pools", hot)
			if err != nil {
				return nil, fmt.Errorf("replica %d: %w", i+1, err)
			}
			out[i] = l
		}
		return out, nil
	}
	allHot := func() error {
		ls, err := readings()
		if err != nil {
			return err
		}
		for i, l := range ls {
			if l < held {
				return fmt.Errorf("replica %d reads %v requests in flight on %s, want %d", i+1, l, hot, held)
			}
		}
		return nil
	}
	if err := launch.Eventually(ctx, 10*time.Second, allHot); err != nil {
		t.Fatalf("%v (%d requests failed open)", err, f.failedOpen())
	}
	// Each Envoy counts its own half: what the replicas read is the sum.
	for i, port := range []int{f.s.AdminPort, f.s.Gateways[0].AdminPort} {
		m, err := discovery.RequestsInFlight(ctx, http.DefaultClient, discovery.AdminURL("127.0.0.1:"+strconv.Itoa(port)), "app")
		if err != nil || m[hotAddr] != held/2 {
			t.Fatalf("Envoy %d counts %v requests in flight on %s (%v), want %d", i+1, m[hotAddr], hot, err, held/2)
		}
	}
	seen, _ := readings()

	failedOpen := f.failedOpen()
	decided0, new0 := f.decisions(t, replicas)
	const keys = 40
	first := make([][2]string, keys)
	for i := range keys {
		key := fmt.Sprintf("fresh-%d", i)
		start := make(chan struct{})
		var wg sync.WaitGroup
		for g := range first[i] {
			wg.Go(func() {
				<-start
				r, err := plainGet(f.client, f.gateways[g], "x-session-id", key)
				if err != nil {
					t.Errorf("%s through Envoy %d: %v", key, g+1, err)
					return
				}
				first[i][g] = r.Host
			})
		}
		close(start)
		wg.Wait()
	}
	if t.Failed() {
		t.FailNow()
	}
	// The holds were still running: every placement saw the hot host.
	if err := allHot(); err != nil {
		t.Fatalf("the held requests ended before the keys were placed: %v", err)
	}
	decided1, new1 := f.decisions(t, replicas)

	count := map[string]int{}
	split := 0
	for i, hosts := range first {
		count[hosts[0]]++
		if hosts[0] != hosts[1] {
			split++
			t.Errorf("fresh-%d: its two first requests went to %s and %s", i, hosts[0], hosts[1])
		}
	}
	// Every later request of a key, four through each Envoy, goes where
	// its first did; Redis holds that host.
	moved := 0
	for i, hosts := range first {
		key := fmt.Sprintf("fresh-%d", i)
		for n := range 8 {
			r, err := plainGet(f.client, f.gateways[n%2], "x-session-id", key)
			if err != nil {
				t.Fatalf("%s: %v", key, err)
			}
			if r.Host != hosts[0] {
				moved++
				t.Errorf("%s, request %d: served by %s, first by %s", key, n+2, r.Host, hosts[0])
				break
			}
		}
		if v, err := redis.CLI("GET", redisstore.BindingKey("envoy-affinity:", "default", "h:"+key)); err != nil || v != hosts[0] {
			t.Errorf("%s: Redis binds it to %q (%v), its requests went to %s", key, v, err, hosts[0])
		}
	}
	decided2, _ := f.decisions(t, replicas)

	var perReplica []string
	claims := 0.0
	for i := range replicas {
		perReplica = append(perReplica, fmt.Sprintf("replica %d: %v first, %v later, %v claimed",
			i+1, decided1[i]-decided0[i], decided2[i]-decided1[i], new1[i]-new0[i]))
		claims += new1[i] - new0[i]
	}
	t.Logf("%d requests in flight on %s (%d through each Envoy), read by the replicas as %v; %d new keys, "+
		"the first request of each through both Envoys at once: %v, %d split; 8 later requests each: %d keys moved; %s; %d requests failed open",
		held, hot, held/2, seen, keys, count, split, moved, strings.Join(perReplica, "; "), f.failedOpen()-failedOpen)
	if n := f.failedOpen() - failedOpen; n != 0 {
		t.Fatalf("%d requests failed open: they were not placed by a replica", n)
	}
	if count[hot] != 0 {
		t.Fatalf("the hot host %s took %d new keys: %v", hot, count[hot], count)
	}
	for i := range replicas {
		if decided1[i] == decided0[i] || decided2[i] == decided1[i] {
			t.Fatalf("replica %d decided no first or no later request: %s", i+1, strings.Join(perReplica, "; "))
		}
	}
	if claims != keys {
		t.Fatalf("the replicas claimed %v keys, want each of the %d once", claims, keys)
	}
}

// decisions reads each of the first n replicas' decisions: all of them,
// and those that bound a new key.
func (f *fleet) decisions(t *testing.T, n int) (all, fresh []float64) {
	t.Helper()
	all, fresh = make([]float64, n), make([]float64, n)
	for i := range n {
		body, err := f.replicaGet(i, "/metrics")
		if err != nil {
			t.Fatal(err)
		}
		for _, line := range strings.Split(body, "\n") {
			if !strings.HasPrefix(line, "envoy_affinity_decisions_total{") {
				continue
			}
			v, _ := strconv.ParseFloat(line[strings.LastIndexByte(line, ' ')+1:], 64)
			all[i] += v
			if strings.Contains(line, `outcome="new"`) {
				fresh[i] += v
			}
		}
	}
	return all, fresh
}
