// End-to-end tests: the real Envoy runs the YAML of envoy/ (opaque.yaml,
// verified.yaml, ...), talking to the real envoy-affinity server and demo
// backends on loopback, all started by internal/launch.
package e2e_test

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"testing"

	"github.com/envoy-affinity/envoy-affinity/internal/launch"
	"github.com/envoy-affinity/envoy-affinity/internal/launchtest"
)

var bins launch.Binaries

func TestMain(m *testing.M) { os.Exit(launchtest.Main(m, &bins, nil)) }

// envoyYAML is the path of a file of envoy/, the configuration users copy.
func envoyYAML(name string) string { return filepath.Join("..", "envoy", name) }

// newStack starts Envoy (envoy/<mode>.yaml), the server and three backends
// for one test.
func newStack(t *testing.T, mode string) *launch.Stack {
	t.Helper()
	return newStackWith(t, launch.Options{Mode: mode})
}

func newStackWith(t *testing.T, opts launch.Options) *launch.Stack {
	t.Helper()
	opts.Dir = t.TempDir()
	s, err := launch.StartStack(context.Background(), bins, opts)
	if err != nil {
		t.Fatal(err)
	}
	launchtest.CloseWhenDone(t, s, func() *launch.Proc { return s.Envoy })
	return s
}

// session is one user and where the server bound it.
type session struct {
	c    *launch.Client
	host string // backend name from the first reply
	// path and headers are what each of its requests sends (path "/" when
	// empty; headers "k", "v", ...): the key of a session keyed by a query
	// parameter or a header.
	path    string
	headers []string
	// call, when set, sends its requests instead of the HTTP client (a
	// gRPC session).
	call func() (launch.Reply, error)
}

// get sends one request of the session.
func (ss *session) get() (launch.Reply, *http.Response, error) {
	if ss.call != nil {
		r, err := ss.call()
		return r, nil, err
	}
	path := ss.path
	if path == "" {
		path = "/"
	}
	return ss.c.Get(path, ss.headers...)
}

// startSessions opens n sessions, each with one request, and checks that the
// backend that answered is the one the session cookie names.
func startSessions(t *testing.T, s *launch.Stack, n int) []*session {
	t.Helper()
	return startSessionsOn(t, s, n, 0)
}

// spreadSessions opens n sessions of which at least two are on each of the
// stack's backends: the precondition of a test that moves one host's
// sessions and watches the others stay.
func spreadSessions(t *testing.T, s *launch.Stack, n int) []*session {
	t.Helper()
	hosts := make([]string, len(s.Backends))
	for i, b := range s.Backends {
		hosts[i] = b.Name
	}
	return startSessionsOn(t, s, n, 2, hosts...)
}

// maxExtraSessions bounds the sessions startSessionsOn opens beyond n before
// it gives up: with three equal hosts, 300 sessions miss one of them in
// fewer than one run in 10^52.
const maxExtraSessions = 300

// startSessionsOn opens sessions like startSessions until it holds n of
// them with at least least on each of hosts. Placement is random, so a
// session that would take a slot the hosts still short of min need is
// opened and left unused. After n+maxExtraSessions the test fails, naming
// the hosts that got too few.
func startSessionsOn(t *testing.T, s *launch.Stack, n, least int, hosts ...string) []*session {
	t.Helper()
	return openSessionsOn(t, n, least, func(int) (*session, error) {
		c := launch.NewClient(s.URL(""))
		r, _, err := c.Get("/")
		if err != nil {
			return nil, err
		}
		if h := s.CookieHost(c.Cookie("affinity")); h != r.Host {
			return nil, fmt.Errorf("served by %s, cookie names %q", r.Host, h)
		}
		return &session{c: c, host: r.Host}, nil
	}, hosts...)
}

// openSessionsOn is startSessionsOn with sessions that open(i) starts.
func openSessionsOn(t *testing.T, n, least int, open func(i int) (*session, error), hosts ...string) []*session {
	t.Helper()
	if least*len(hosts) > n {
		t.Fatalf("%d sessions cannot hold %d on each of %d hosts", n, least, len(hosts))
	}
	short := map[string]int{} // how many more each host needs
	for _, h := range hosts {
		short[h] = least
	}
	missing := least * len(hosts)
	out := make([]*session, 0, n)
	for opened := 0; len(out) < n; opened++ {
		if opened == n+maxExtraSessions {
			t.Fatalf("after %d sessions, these hosts still lack some of the %d each needs: %v", opened, least, short)
		}
		ss, err := open(opened)
		if err != nil {
			t.Fatalf("session %d: %v", opened, err)
		}
		if short[ss.host] > 0 {
			if short[ss.host]--; short[ss.host] == 0 {
				delete(short, ss.host)
			}
			missing--
		} else if n-len(out) <= missing {
			continue // the remaining slots belong to hosts still short
		}
		out = append(out, ss)
	}
	return out
}

// sessionLoad runs workers goroutines, each sending the requests of its
// share of sessions through send, one session after the other, and calling
// round (when not nil) after each pass, until stop is called. stop waits for
// them; it also runs when the test ends, before the stack closes.
func sessionLoad(t *testing.T, sessions []*session, workers int, send func(*session), round func()) (stop func()) {
	t.Helper()
	done := make(chan struct{})
	var wg sync.WaitGroup
	var once sync.Once
	stop = func() { once.Do(func() { close(done) }); wg.Wait() }
	t.Cleanup(stop)
	share := len(sessions) / workers
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				for _, ss := range sessions[w*share : (w+1)*share] {
					select {
					case <-done:
						return
					default:
					}
					send(ss)
				}
				if round != nil {
					round()
				}
			}
		}()
	}
	return stop
}

// phasedLoad is a sessionLoad for a test that changes something under load
// (kills a backend, stops the service): each request belongs to the phase it
// started in. Its counts are the caller's, kept under mu.
type phasedLoad struct {
	mu    sync.Mutex
	phase string
	stop  func()
}

// run starts the load: each request of a session is sent and handed to
// record with its phase, under mu; round (when not nil) runs after each
// pass, as in sessionLoad.
func (l *phasedLoad) run(t *testing.T, sessions []*session, workers int, record func(ss *session, phase string, r launch.Reply, err error), round func()) {
	t.Helper()
	l.mu.Lock()
	if l.phase == "" {
		l.phase = "before"
	}
	l.mu.Unlock()
	l.stop = sessionLoad(t, sessions, workers, func(ss *session) {
		at := l.now()
		r, _, err := ss.get()
		l.mu.Lock()
		defer l.mu.Unlock()
		record(ss, at, r, err)
	}, round)
}

// set starts the next phase.
func (l *phasedLoad) set(phase string) {
	l.mu.Lock()
	l.phase = phase
	l.mu.Unlock()
}

// now is the current phase.
func (l *phasedLoad) now() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.phase
}

// expectNewSession sends a request carrying cookie as the session cookie and
// checks that it starts a new session (a new cookie whose sid is not
// "forged") served by the host the new cookie names. It returns the number
// of ext_proc streams the request took.
func expectNewSession(t *testing.T, s *launch.Stack, cookie string) int {
	t.Helper()
	before := streams(t, s)
	c := launch.NewClient(s.URL(""))
	c.SetCookie("affinity", cookie)
	r, _, err := c.Get("/")
	if err != nil {
		t.Fatal(err)
	}
	fresh := c.Cookie("affinity")
	if fresh == cookie || launch.TokenClaim(fresh, "sid") == "forged" {
		t.Fatal("not a new session")
	}
	if h := s.CookieHost(fresh); h != r.Host {
		t.Fatalf("served by %s, the new cookie names %s", r.Host, h)
	}
	return streams(t, s) - before
}
