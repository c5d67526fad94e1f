package main

import (
	"bytes"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"
)

func runTool(t *testing.T, args ...string) Result {
	t.Helper()
	var out bytes.Buffer
	if err := run(args, &out); err != nil {
		t.Fatal(err)
	}
	var r Result
	if err := json.Unmarshal(out.Bytes(), &r); err != nil {
		t.Fatal(err)
	}
	return r
}

func TestLoad(t *testing.T) {
	var withCookie, total atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		total.Add(1)
		if c, err := r.Cookie("affinity"); err == nil && (c.Value == "a" || c.Value == "b") {
			withCookie.Add(1)
		}
	}))
	defer srv.Close()
	cookies := filepath.Join(t.TempDir(), "cookies.txt")
	if err := os.WriteFile(cookies, []byte("affinity=a\naffinity=b\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	closed := runTool(t, "-url", srv.URL, "-cookies", cookies, "-c", "2", "-duration", "200ms")
	if closed.Requests == 0 || closed.Errors != 0 || closed.P50Micros == 0 {
		t.Fatalf("closed loop: %+v", closed)
	}
	open := runTool(t, "-url", srv.URL, "-cookies", cookies, "-rate", "200", "-duration", "500ms")
	if open.Requests != 100 || open.Errors != 0 {
		t.Fatalf("open loop at 200/s for 0.5 s: %+v", open)
	}
	if withCookie.Load() != total.Load() {
		t.Fatalf("%d of %d requests carried a session cookie", withCookie.Load(), total.Load())
	}
}

// TestOpenLoopCountsQueueing: a server that takes 20 ms per request, one
// request in flight at most, 100 requests due per second. The requests queue
// behind each other; measured from when each was due, the latency grows far
// beyond the 20 ms service time, as it would for real users.
func TestOpenLoopCountsQueueing(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		<-time.After(20 * time.Millisecond)
	}))
	defer srv.Close()
	r := runTool(t, "-url", srv.URL, "-rate", "100", "-duration", "500ms", "-max-in-flight", "1")
	if r.P99Micros < 200_000 {
		t.Fatalf("p99 %d µs: the queueing behind slow answers was not counted", r.P99Micros)
	}
}
