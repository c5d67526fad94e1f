// Command backend is the demo application behind Envoy: it answers with its
// own name and a per-session request counter kept in memory, so a session
// that lands on another host is plain to see (its counter starts again).
//
// The session is the application's own cookie (app_session by default),
// which the backend sets on a request that has none, as a real application
// would; it lives beside the affinity cookie. With -session-header the
// session is a header instead, which the backend sets in its answer to a
// request without one and the client sends back (an API's session token).
//
// With -capacity N and -work D it is a host of limited capacity: at most N
// requests at work at a time, each taking D, the others waiting in line, so
// its latency grows with the load placed on it (the placement scenario of
// e2e/heavy). Health checks do not wait in that line.
//
// A request with ?hold=DURATION is answered that much later (at most a
// minute), to keep requests in flight on a host.
//
// With -grpc it also speaks gRPC on the same port, over HTTP/2 without TLS
// (h2c, as Envoy's upstream speaks it): Hello answers with the same reply,
// Watch streams it (grpc.go). The session is the call's metadata named by
// -session-header (x-session-id when unset).
package main

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// reply is the JSON body of every answer.
type reply struct {
	Host    string `json:"host"`
	Session string `json:"session"`
	Count   int    `json:"count"`
	// Told are the request's x-session-* and x-affinity-* headers: what the
	// affinity service told the application (re-binds, successors) or
	// Envoy (output headers), as the request reached the application.
	Told map[string]string `json:"told,omitempty"`
}

type app struct {
	name    string
	cookie  string
	header  string // the session header ("": the cookie)
	mu      sync.Mutex
	counts  map[string]int
	failing atomic.Bool // /healthz answers 503 while set
}

// health serves /healthz for Envoy's active health check, and lets a demo or
// a test make it fail (POST /healthz/fail) and recover (POST /healthz/ok).
func (a *app) health(w http.ResponseWriter, r *http.Request) {
	switch r.URL.Path {
	case "/healthz/fail":
		a.failing.Store(true)
	case "/healthz/ok":
		a.failing.Store(false)
	}
	if a.failing.Load() {
		http.Error(w, "failing\n", http.StatusServiceUnavailable)
		return
	}
	_, _ = w.Write([]byte("ok\n"))
}

// maxHold bounds how long ?hold= keeps a request.
const maxHold = time.Minute

func (a *app) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	// ?hold=DURATION answers that much later (or when the client goes):
	// a demo or a test keeps requests in flight on a host with it.
	if d, err := time.ParseDuration(r.URL.Query().Get("hold")); err == nil && d > 0 {
		t := time.NewTimer(min(d, maxHold))
		defer t.Stop()
		select {
		case <-t.C:
		case <-r.Context().Done():
			return
		}
	}
	sid := ""
	if a.header != "" {
		sid = r.Header.Get(a.header)
	} else if c, err := r.Cookie(a.cookie); err == nil {
		sid = c.Value
	}
	if sid == "" {
		sid = newSessionID()
		if a.header != "" {
			w.Header().Set(a.header, sid)
		} else {
			http.SetCookie(w, &http.Cookie{Name: a.cookie, Value: sid, Path: "/", HttpOnly: true})
		}
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("X-Backend", a.name)
	_ = json.NewEncoder(w).Encode(reply{Host: a.name, Session: sid, Count: a.count(sid), Told: told(r.Header)})
}

// count adds a request to the session's counter and returns it.
func (a *app) count(sid string) int {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.counts[sid]++
	return a.counts[sid]
}

// newSessionID is a random session id, for a request that carries none.
func newSessionID() string {
	var b [12]byte
	_, _ = rand.Read(b[:])
	return base64.RawURLEncoding.EncodeToString(b[:])
}

// told picks the x-session-* and x-affinity-* headers (HTTP headers or gRPC
// metadata), names lowercased.
func told(h map[string][]string) map[string]string {
	var out map[string]string
	for k, v := range h {
		if k := strings.ToLower(k); strings.HasPrefix(k, "x-session-") || strings.HasPrefix(k, "x-affinity-") {
			if out == nil {
				out = map[string]string{}
			}
			out[k] = strings.Join(v, ",")
		}
	}
	return out
}

func main() {
	addr := flag.String("addr", "127.0.0.1:8081", "listen address")
	name := flag.String("name", "backend-1", "name to answer with")
	cookie := flag.String("cookie", "app_session", "name of the application's own session cookie")
	header := flag.String("session-header", "", "keep the session in this header instead of the cookie: set in the answer to a request without it")
	capacity := flag.Int("capacity", 0, "work on at most this many requests at a time, the others waiting in line (0: no limit)")
	work := flag.Duration("work", 0, "with -capacity: how long each request takes")
	grpcToo := flag.Bool("grpc", false, "also serve gRPC (h2c) on the same port: service "+grpcService+", the session from the -session-header metadata ("+defaultGRPCHeader+" when unset)")
	flag.Parse()
	if *capacity < 0 || *work < 0 || (*work > 0 && *capacity == 0) {
		fmt.Fprintln(os.Stderr, "backend: -capacity must be at least 0, -work at least 0, and -work needs -capacity")
		os.Exit(2)
	}

	ln, err := net.Listen("tcp", *addr)
	if err != nil {
		fmt.Fprintln(os.Stderr, "backend:", err)
		os.Exit(1)
	}
	a := &app{name: *name, cookie: *cookie, header: *header, counts: map[string]int{}}
	mux := http.NewServeMux()
	var h http.Handler = a
	if *capacity > 0 {
		h = limit(a, *capacity, *work)
	}
	mux.Handle("/", h)
	mux.HandleFunc("GET /healthz", a.health)
	mux.HandleFunc("POST /healthz/fail", a.health)
	mux.HandleFunc("POST /healthz/ok", a.health)
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	if *grpcToo {
		a.serveGRPC(srv)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	go func() {
		<-ctx.Done()
		sctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		_ = srv.Shutdown(sctx)
	}()
	if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
		fmt.Fprintln(os.Stderr, "backend:", err)
		os.Exit(1)
	}
}
