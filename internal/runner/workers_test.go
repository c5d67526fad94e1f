package runner

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"
)

// TestPoolWorkersReconcile: a pool's task starts when the pool gets a
// setting, restarts when the setting changes, stops when it has none; an
// unchanged setting leaves the task running.
func TestPoolWorkersReconcile(t *testing.T) {
	var mu sync.Mutex
	var events []string
	record := func(e string) {
		mu.Lock()
		defer mu.Unlock()
		events = append(events, e)
	}
	ctx, cancel := context.WithCancel(context.Background())
	w := newPoolWorkers(ctx, func(pool string, conf int) string { return fmt.Sprintf("%s/%d", pool, conf) },
		func(ctx context.Context, pool string, conf int, state string) {
			record("start " + state)
			<-ctx.Done()
			record("stop " + state)
		})
	await := func(want ...string) {
		t.Helper()
		deadline := time.Now().Add(10 * time.Second)
		for {
			mu.Lock()
			got := slices.Clone(events)
			mu.Unlock()
			slices.Sort(got)
			slices.Sort(want)
			if slices.Equal(got, want) {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("events %v, want %v", got, want)
			}
			time.Sleep(5 * time.Millisecond)
		}
	}
	w.reconcile(map[string]int{"a": 1, "b": 1})
	await("start a/1", "start b/1")
	if conf, state, ok := w.lookup("b"); !ok || conf != 1 || state != "b/1" {
		t.Fatalf("lookup b: %v %q %v", conf, state, ok)
	}
	w.reconcile(map[string]int{"a": 1, "b": 2})
	await("start a/1", "start b/1", "stop b/1", "start b/2")
	w.reconcile(map[string]int{"b": 2})
	await("start a/1", "start b/1", "stop b/1", "start b/2", "stop a/1")
	if _, _, ok := w.lookup("a"); ok {
		t.Fatal("a stopped task is still looked up")
	}
	cancel()
	w.wait()
	await("start a/1", "start b/1", "stop b/1", "start b/2", "stop a/1", "stop b/2")
}

// TestDiscoveriesStatus: a pool without a running discovery has no status.
func TestDiscoveriesStatus(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	d := NewDiscoveries(ctx, nil, nil)
	if _, ok := d.Status("web"); ok {
		t.Fatal("a status without a discovery")
	}
	cancel()
	d.Wait()
}
