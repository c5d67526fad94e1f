// Command soak runs the real Envoy (verified mode), the service and three
// demo backends under steady load for a set time, as production would for
// days: established sessions, new ones, tokens that expire and are
// refreshed (a 30 s refresh interval), forged cookies, a configuration
// reload every few minutes and a key rotation every few more. Every minute
// it reads the service's resident memory and goroutines from its metrics.
// It fails when a request fails, or when either figure grows past its bound
// after the warm-up: a leak shows there, not in a unit test.
//
//	go run ./e2e/soak -duration 30m      (make soak)
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/envoy-affinity/envoy-affinity/internal/launch"
)

func main() {
	duration := flag.Duration("duration", 30*time.Minute, "how long the load runs")
	rate := flag.Int("rate", 200, "requests per second")
	sessions := flag.Int("sessions", 500, "established sessions kept open (replaced as new ones start)")
	warmup := flag.Duration("warmup", 0, "time after which memory and goroutines are held to their bounds (default: a sixth of -duration, at least a minute)")
	every := flag.Duration("sample", time.Minute, "how often memory and goroutines are read")
	flag.Parse()
	if *warmup == 0 {
		*warmup = max(time.Minute, *duration/6)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	if err := run(ctx, *duration, *warmup, *every, *rate, *sessions); err != nil {
		fmt.Fprintln(os.Stderr, "soak:", err)
		os.Exit(1)
	}
}

// sample is the service's figures at one moment.
type sample struct {
	at         time.Duration
	rss        float64 // bytes
	goroutines float64
	requests   int64
}

func run(ctx context.Context, duration, warmup, every time.Duration, rate, nSessions int) error {
	dir, bins, remove, err := launch.BuildTemp("soak")
	if err != nil {
		return err
	}
	defer remove()
	s, err := launch.StartStack(ctx, bins, launch.Options{Dir: dir, Mode: "verified", RefreshInterval: 30 * time.Second, SignDelay: 10 * time.Second})
	if err != nil {
		return err
	}
	defer s.Close()

	l := &load{s: s, jar: make([]*launch.Client, nSessions)}
	for i := range l.jar {
		l.jar[i] = launch.NewClient(s.URL(""))
	}
	start := time.Now()
	deadline := start.Add(duration)
	var samples []sample
	read := func() error {
		rss, gor, err := serviceFigures(s)
		if err != nil {
			return err
		}
		smp := sample{at: time.Since(start).Round(time.Second), rss: rss, goroutines: gor, requests: l.requests.Load()}
		samples = append(samples, smp)
		fmt.Printf("%8s  rss %6.1f MiB  goroutines %4.0f  requests %8d  failed %d\n", smp.at, rss/(1<<20), gor, smp.requests, l.failed.Load())
		return nil
	}
	if err := read(); err != nil {
		return err
	}

	loadCtx, stopLoad := context.WithDeadline(ctx, deadline)
	defer stopLoad()
	var wg sync.WaitGroup
	wg.Go(func() { l.run(loadCtx, rate) })
	sampleT, reloadT, rotateT := time.NewTicker(every), time.NewTicker(3*time.Minute), time.NewTicker(5*time.Minute)
	defer sampleT.Stop()
	defer reloadT.Stop()
	defer rotateT.Stop()
	reloads, rotations := 0, 0
loop:
	for {
		select {
		case <-loadCtx.Done():
			break loop
		case <-sampleT.C:
			if err := read(); err != nil {
				return err
			}
		case <-reloadT.C:
			reloads++
			if err := appendLine(s.ConfigPath, fmt.Sprintf("# reload %d\n", reloads)); err != nil {
				return err
			}
		case <-rotateT.C:
			rotations++
			if err := rotate(s.KeysPath, fmt.Sprintf("k%d", rotations+1)); err != nil {
				return err
			}
		}
	}
	wg.Wait()
	if err := read(); err != nil {
		return err
	}
	fmt.Printf("\n%d requests in %s (%d failed), %d new sessions, %d forged cookies, %d config reloads, %d key rotations\n",
		l.requests.Load(), duration, l.failed.Load(), l.fresh.Load(), l.forged.Load(), reloads, rotations)
	return judge(samples, warmup, l.failed.Load(), l.lastErr())
}

// judge applies the bounds: after the warm-up, resident memory within 1.5
// times the warm-up's largest plus 16 MiB, goroutines within it plus 50,
// and no failed request.
func judge(samples []sample, warmup time.Duration, failed int64, lastErr error) error {
	var base sample
	for _, s := range samples {
		if s.at <= warmup {
			base.rss, base.goroutines = max(base.rss, s.rss), max(base.goroutines, s.goroutines)
		}
	}
	var errs []error
	for _, s := range samples {
		if s.at <= warmup {
			continue
		}
		if s.rss > 1.5*base.rss+16<<20 {
			errs = append(errs, fmt.Errorf("at %s resident memory %.1f MiB, bound %.1f MiB", s.at, s.rss/(1<<20), (1.5*base.rss+16<<20)/(1<<20)))
		}
		if s.goroutines > base.goroutines+50 {
			errs = append(errs, fmt.Errorf("at %s %0.f goroutines, bound %.0f", s.at, s.goroutines, base.goroutines+50))
		}
	}
	if failed > 0 {
		errs = append(errs, fmt.Errorf("%d requests failed, the last: %v", failed, lastErr))
	}
	if len(errs) == 0 {
		fmt.Printf("after the %s warm-up: resident memory at most %.1f MiB (bound %.1f), goroutines at most %.0f (bound %.0f)\n",
			warmup, peak(samples, warmup, func(s sample) float64 { return s.rss })/(1<<20), (1.5*base.rss+16<<20)/(1<<20),
			peak(samples, warmup, func(s sample) float64 { return s.goroutines }), base.goroutines+50)
	}
	return errors.Join(errs...)
}

func peak(samples []sample, after time.Duration, f func(sample) float64) float64 {
	m := 0.0
	for _, s := range samples {
		if s.at > after {
			m = max(m, f(s))
		}
	}
	return m
}

// load is the traffic: at each tick one request of a kind drawn at random.
type load struct {
	s                               *launch.Stack
	mu                              sync.Mutex
	jar                             []*launch.Client
	requests, failed, fresh, forged atomic.Int64
	errMu                           sync.Mutex
	err                             error
}

func (l *load) lastErr() error {
	l.errMu.Lock()
	defer l.errMu.Unlock()
	return l.err
}

func (l *load) run(ctx context.Context, rate int) {
	t := time.NewTicker(time.Second / time.Duration(rate))
	defer t.Stop()
	var wg sync.WaitGroup
	defer wg.Wait()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		wg.Go(l.one)
	}
}

func (l *load) one() {
	var err error
	switch r := rand.IntN(100); {
	case r < 80: // an established session (its token refreshed every 30 s)
		l.mu.Lock()
		c := l.jar[rand.IntN(len(l.jar))]
		l.mu.Unlock()
		_, _, err = c.Get("/")
	case r < 90: // a new session, which takes the place of an old one
		l.fresh.Add(1)
		c := launch.NewClient(l.s.URL(""))
		if _, _, err = c.Get("/"); err == nil {
			l.mu.Lock()
			i := rand.IntN(len(l.jar))
			old := l.jar[i]
			l.jar[i] = c
			l.mu.Unlock()
			// Its requests in flight finish; its idle connection goes.
			old.Close()
		} else {
			c.Close()
		}
	default: // a forged cookie: a new session, never an error
		l.forged.Add(1)
		c := launch.NewClient(l.s.URL(""))
		c.SetCookie("affinity", "eyJhbGciOiJFZERTQSIsImtpZCI6ImsxIn0.e30."+strconv.Itoa(rand.IntN(1e9)))
		_, _, err = c.Get("/")
		c.Close()
	}
	l.requests.Add(1)
	if err != nil {
		l.failed.Add(1)
		l.errMu.Lock()
		l.err = err
		l.errMu.Unlock()
	}
}

// serviceFigures reads the service's resident memory and goroutines.
func serviceFigures(s *launch.Stack) (rss, goroutines float64, err error) {
	resp, err := http.Get(s.ServerURL("/metrics"))
	if err != nil {
		return 0, 0, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return 0, 0, err
	}
	found := 0
	for _, line := range strings.Split(string(body), "\n") {
		for name, into := range map[string]*float64{"process_resident_memory_bytes": &rss, "go_goroutines": &goroutines} {
			if v, ok := strings.CutPrefix(line, name+" "); ok {
				if *into, err = strconv.ParseFloat(v, 64); err != nil {
					return 0, 0, err
				}
				found++
			}
		}
	}
	if found != 2 {
		return 0, 0, errors.New("the service's metrics lack process_resident_memory_bytes or go_goroutines")
	}
	return rss, goroutines, nil
}

// appendLine changes the config file (a comment), which the service reloads.
func appendLine(path, line string) error {
	data, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	return writeAtomic(path, append(data, line...))
}

// rotate puts a new signing key first in the keys file and keeps the one
// before it (tokens it signed are still in use), dropping older ones.
func rotate(path, id string) error {
	data, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	lines := strings.Split(strings.TrimSpace(string(data)), "\n")
	keep := append([]string{launch.NewKeyLine(id, "ed25519")}, lines[0])
	return writeAtomic(path, []byte(strings.Join(keep, "\n")+"\n"))
}

func writeAtomic(path string, data []byte) error {
	tmp := filepath.Join(filepath.Dir(path), "."+filepath.Base(path)+".tmp")
	if err := os.WriteFile(tmp, data, 0o600); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}
