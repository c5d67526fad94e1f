package main

import (
	"context"
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"
)

// TestLimit sends capacity+1 requests at once, every one held at work until
// the test lets it go: capacity of them start, the last starts only once a
// slot is freed, no more than capacity are ever at work together, and every
// request is served.
func TestLimit(t *testing.T) {
	for _, capacity := range []int{1, 2, 4} {
		t.Run("", func(t *testing.T) {
			var active, most atomic.Int32
			arrived := make(chan struct{}, capacity+1)
			started := make(chan struct{}, capacity+1)
			release := make(chan struct{})
			var served atomic.Int32
			ok := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { served.Add(1) })
			l := limit(ok, capacity, 0)
			l.work = func(ctx context.Context) {
				n := active.Add(1)
				for m := most.Load(); n > m && !most.CompareAndSwap(m, n); m = most.Load() {
				}
				started <- struct{}{}
				<-release
				active.Add(-1)
			}
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				arrived <- struct{}{}
				l.ServeHTTP(w, r)
			}))
			defer srv.Close()

			var wg sync.WaitGroup
			for range capacity + 1 {
				wg.Add(1)
				go func() {
					defer wg.Done()
					resp, err := srv.Client().Get(srv.URL)
					if err != nil {
						t.Error(err)
						return
					}
					resp.Body.Close()
					if resp.StatusCode != http.StatusOK {
						t.Errorf("status %d", resp.StatusCode)
					}
				}()
			}
			for range capacity + 1 {
				<-arrived
			}
			for range capacity {
				<-started
			}
			if got := len(l.slots); got != capacity {
				t.Fatalf("%d slots taken, want %d", got, capacity)
			}
			release <- struct{}{} // one request done: the one waiting starts
			<-started
			close(release)
			wg.Wait()
			if got := most.Load(); got != int32(capacity) {
				t.Errorf("%d requests at work together, want at most %d", got, capacity)
			}
			if got := served.Load(); got != int32(capacity+1) {
				t.Errorf("%d requests served, want %d", got, capacity+1)
			}
			if got := len(l.slots); got != 0 {
				t.Errorf("%d slots still taken", got)
			}
		})
	}
}

// TestLimitLeaveLine: a request whose client gives up while it waits for a
// slot leaves the line without taking one or being served.
func TestLimitLeaveLine(t *testing.T) {
	served := false
	l := limit(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { served = true }), 1, 0)
	l.slots <- struct{}{} // the only slot, taken
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		l.ServeHTTP(httptest.NewRecorder(), httptest.NewRequestWithContext(ctx, http.MethodGet, "/", nil))
	}()
	cancel()
	<-done
	if got := len(l.slots); got != 1 {
		t.Errorf("%d slots taken after the waiting request left, want 1", got)
	}
	if served {
		t.Error("a request that left the line was served")
	}
}
