package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/cookiejar"
	"os"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/envoy-affinity/envoy-affinity/internal/launch"
)

// result is what one configuration's run saw, by backend name.
type result struct {
	hosts []string
	// heavyAt is the host of each heavy session's first answer (its
	// placement); heavyServed the heavy requests each host served.
	heavyAt     []string
	heavyServed map[string]int
	// dropped heavy sessions did not fit -layout.
	dropped int
	// placed is the host of each ordinary session's first answer.
	placed []string
	// ordinary are the ordinary requests answered, with where and how
	// long from send to the end of the answer.
	ordinary []served
	// split sessions were answered by more than one host; failed requests
	// got no answer or a status other than 200 (while the run lasted).
	heavySplit, split   int
	heavyFailed, failed int
}

// served is one answered request.
type served struct {
	host string
	took time.Duration
	// first is a session's first request (the one that places it).
	first bool
}

// scenario runs the scenario once through configuration c, in dir.
func scenario(ctx context.Context, st settings, bins launch.Binaries, c config, dir string) (*result, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	stack, err := launch.StartStack(ctx, bins, launch.Options{Dir: dir, Mode: c.mode, EnvoyYAML: c.yaml, LoadFactor: c.loadFactor, Load: c.load,
		Backends: st.backends, Envoys: st.envoys,
		BackendArgs: []string{"-capacity", strconv.Itoa(st.capacity), "-work", st.work.String()}})
	if err != nil {
		return nil, err
	}
	defer stack.Close()
	// The heavy sessions enter through the stack's Envoy, the ordinary ones
	// through the second when there is one: neither Envoy then sees the
	// other's requests in flight.
	heavyURL, ordinaryURL := stack.URL("/"), stack.URL("/")
	if len(stack.Gateways) > 0 {
		ordinaryURL = stack.Gateways[0].URL("/")
	}
	if c.mode == "verified" && c.yaml == "" {
		// From here on Envoy verifies the tokens itself, as in production.
		if err := stack.WaitJWKS(ctx); err != nil {
			return nil, err
		}
	}
	res := &result{heavyServed: map[string]int{}}
	for _, b := range stack.Backends {
		res.hosts = append(res.hosts, b.Name)
	}
	var mu sync.Mutex // guards res while the sessions run

	// The heavy sessions, one after the other, each loading its host
	// before the next is placed (a least-request balancer sees it).
	heavyCtx, stopHeavy := context.WithCancel(ctx)
	var heavyDone, warm sync.WaitGroup
	defer heavyDone.Wait()
	defer stopHeavy()
	var heavyHosts []map[string]bool // each heavy session's hosts
	count := make([]int, len(res.hosts))
	for len(res.heavyAt) < st.heavy {
		u := newUser(heavyURL, st.inFlight)
		first, err := u.get(ctx)
		if err != nil {
			return nil, fmt.Errorf("opening a heavy session: %w", err)
		}
		h := slices.Index(res.hosts, first.host)
		if h < 0 {
			return nil, fmt.Errorf("answered by %q, not a backend of the stack", first.host)
		}
		if c.sticky && st.layout != nil && !fits(count, h, st.layout) {
			u.close()
			if res.dropped++; res.dropped > 50*st.heavy {
				return nil, fmt.Errorf("heavy sessions landed %v after %d drawn: layout %v not reached", count, res.dropped, st.layout)
			}
			continue
		}
		count[h]++
		res.heavyAt = append(res.heavyAt, first.host)
		hosts := map[string]bool{first.host: true}
		heavyHosts = append(heavyHosts, hosts)
		defer u.close()
		for range st.inFlight {
			heavyDone.Add(1)
			warm.Add(1)
			go func() {
				defer heavyDone.Done()
				once := sync.OnceFunc(warm.Done)
				defer once()
				for heavyCtx.Err() == nil {
					r, err := u.get(heavyCtx)
					if heavyCtx.Err() != nil {
						return // the run is over; this request does not count
					}
					mu.Lock()
					if err != nil {
						res.heavyFailed++
					} else {
						res.heavyServed[r.host]++
						hosts[r.host] = true
					}
					mu.Unlock()
					once()
				}
			}()
		}
	}
	warm.Wait() // every heavy request line is going

	// The ordinary sessions, arriving evenly.
	arrived := arrive(ctx, st, ordinaryURL)
	res.placed, res.ordinary, res.split, res.failed = arrived.placed, arrived.ordinary, arrived.split, arrived.failed
	stopHeavy()
	heavyDone.Wait()
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	for _, hosts := range heavyHosts {
		if len(hosts) > 1 {
			res.heavySplit++
		}
	}
	return res, nil
}

// fits tells whether one more heavy session on host h leaves counts
// that the layout (largest first) can still be completed from.
func fits(count []int, h int, layout []int) bool {
	next := slices.Clone(count)
	next[h]++
	slices.Sort(next)
	slices.Reverse(next)
	for i, n := range next {
		if n > layout[i] {
			return false
		}
	}
	return true
}

// wait sleeps until t; false when ctx ends first.
func wait(ctx context.Context, t time.Time) bool {
	d := time.Until(t)
	if d <= 0 {
		return ctx.Err() == nil
	}
	timer := time.NewTimer(d)
	defer timer.Stop()
	select {
	case <-timer.C:
		return true
	case <-ctx.Done():
		return false
	}
}

// user is one session's client: its own cookie jar and connections, as
// many as it has requests going at once.
type user struct {
	url  string
	http *http.Client
}

func newUser(url string, conns int) *user {
	jar, _ := cookiejar.New(nil)
	return &user{url: url, http: &http.Client{Jar: jar, Timeout: 10 * time.Second,
		Transport: &http.Transport{MaxIdleConnsPerHost: conns}}}
}

// get sends one request and reads which host answered.
func (u *user) get(ctx context.Context) (served, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.url, nil)
	if err != nil {
		return served{}, err
	}
	t0 := time.Now()
	resp, err := u.http.Do(req)
	if err != nil {
		return served{}, err
	}
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	took := time.Since(t0)
	if err != nil {
		return served{}, err
	}
	if resp.StatusCode != http.StatusOK {
		return served{}, fmt.Errorf("status %d: %s", resp.StatusCode, body)
	}
	var r launch.Reply
	if err := json.Unmarshal(body, &r); err != nil {
		return served{}, fmt.Errorf("answer %q: %w", body, err)
	}
	return served{host: r.Host, took: took}, nil
}

func (u *user) close() { u.http.CloseIdleConnections() }
