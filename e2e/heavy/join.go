package main

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/envoy-affinity/envoy-affinity/affinity/discovery"
	"github.com/envoy-affinity/envoy-affinity/internal/launch"
)

// The joining-host scenario (-join): the pool runs on all backends but
// the last, carrying established sessions that keep sending requests;
// then the last backend joins the service's pool and Envoy's cluster, and
// new sessions arrive. It measures the share of the new sessions the
// joining host takes against its fair share, and that no session, old or
// new, moves.

// joinResult is what one configuration's joining run saw.
type joinResult struct {
	hosts []string
	// established is the host of each established session; placed of
	// each new one, in arrival order.
	established, placed []string
	// ordinary are the new sessions' requests answered.
	ordinary []served
	// inFlight is each host's mean requests in flight as Envoy counted
	// them (rq_active) while the new sessions arrived, in hosts' order.
	inFlight []float64
	// joinTook is from rewriting the hosts to both the service and Envoy
	// having the new one (healthy in Envoy).
	joinTook                  time.Duration
	establishedSplit, split   int
	establishedFailed, failed int
}

// joinScenario runs the joining-host scenario once through c, in dir.
func joinScenario(ctx context.Context, st settings, bins launch.Binaries, c config, dir string) (*joinResult, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	stack, err := launch.StartStack(ctx, bins, launch.Options{Dir: dir, Mode: c.mode, EnvoyYAML: c.yaml, LoadFactor: c.loadFactor, Load: c.load,
		Backends:    st.backends,
		BackendArgs: []string{"-capacity", strconv.Itoa(st.capacity), "-work", st.work.String()}})
	if err != nil {
		return nil, err
	}
	defer stack.Close()
	before := make([]int, st.backends-1)
	for i := range before {
		before[i] = i
	}
	if err := stack.SetHosts(ctx, before...); err != nil {
		return nil, err
	}
	if c.mode == "verified" && c.yaml == "" {
		if err := stack.WaitJWKS(ctx); err != nil {
			return nil, err
		}
	}
	res := &joinResult{}
	for _, b := range stack.Backends {
		res.hosts = append(res.hosts, b.Name)
	}
	joining := res.hosts[len(res.hosts)-1]
	var mu sync.Mutex // guards res while the sessions run

	// The established sessions, opened one after the other, then each
	// sending a request every -gap until the run ends.
	oldCtx, stopOld := context.WithCancel(ctx)
	var oldDone sync.WaitGroup
	defer oldDone.Wait()
	defer stopOld()
	for range st.established {
		u := newUser(stack.URL("/"), 1)
		first, err := u.get(ctx)
		if err != nil {
			return nil, fmt.Errorf("opening an established session: %w", err)
		}
		if first.host == joining {
			return nil, fmt.Errorf("an established session landed on %s before it joined", joining)
		}
		res.established = append(res.established, first.host)
		oldDone.Add(1)
		go func() {
			defer oldDone.Done()
			defer u.close()
			split := false
			for next := time.Now().Add(st.gap); wait(oldCtx, next); next = next.Add(st.gap) {
				r, err := u.get(oldCtx)
				if oldCtx.Err() != nil {
					break // the run is over; this request does not count
				}
				mu.Lock()
				if err != nil {
					res.establishedFailed++
				} else if r.host != first.host && !split {
					split = true
					res.establishedSplit++
				}
				mu.Unlock()
			}
		}()
	}
	// A second of steady load, so that the load block reads it.
	if !wait(ctx, time.Now().Add(time.Second)) {
		return nil, ctx.Err()
	}

	t0 := time.Now()
	if err := stack.SetHosts(ctx, append(before, st.backends-1)...); err != nil {
		return nil, err
	}
	if err := launch.Eventually(ctx, 10*time.Second, func() error {
		if n, err := stack.EnvoyStat("cluster.app.membership_healthy"); err != nil || n != st.backends {
			return fmt.Errorf("Envoy has %d healthy hosts (%v), want %d", n, err, st.backends)
		}
		return nil
	}); err != nil {
		return nil, err
	}
	res.joinTook = time.Since(t0)

	// Envoy's count of each host's requests in flight while the new
	// sessions arrive: what a least-request balancer or a load block sees.
	sampleCtx, stopSampling := context.WithCancel(ctx)
	sampled := make(chan []float64, 1)
	go func() { sampled <- sampleInFlight(sampleCtx, stack, 250*time.Millisecond) }()

	// The new sessions, arriving evenly from the moment it joined.
	arrived := arrive(ctx, st, stack.URL("/"))
	res.placed, res.ordinary, res.split, res.failed = arrived.placed, arrived.ordinary, arrived.split, arrived.failed
	stopSampling()
	res.inFlight = <-sampled
	stopOld()
	oldDone.Wait()
	return res, ctx.Err()
}

// sampleInFlight reads Envoy's requests in flight per backend every
// interval until ctx ends, and returns each backend's mean over the
// readings (in the stack's backend order; nil without a reading).
func sampleInFlight(ctx context.Context, stack *launch.Stack, interval time.Duration) []float64 {
	client := &http.Client{Timeout: interval}
	url := discovery.AdminURL("127.0.0.1:" + strconv.Itoa(stack.AdminPort))
	sum := make([]float64, len(stack.Backends))
	n := 0
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			if n == 0 {
				return nil
			}
			for i := range sum {
				sum[i] /= float64(n)
			}
			return sum
		case <-t.C:
		}
		load, err := discovery.RequestsInFlight(ctx, client, url, "app")
		if err != nil {
			continue // a reading cut short by the end of the run, or a slow one
		}
		for i, b := range stack.Backends {
			sum[i] += load[b.Address()]
		}
		n++
	}
}

// joinRow is one configuration's joining figures in one round.
type joinRow struct {
	config config
	round  int
	hosts  []string
	// established per host (the joining one last, 0); placed the new
	// sessions per host; share the joining host's share of them.
	established, placed []int
	share, fair         float64
	inFlight            []float64
	p50, p99            time.Duration
	joinTook            time.Duration
	establishedSplit    int
	split               int
	establishedFailed   int
	failed              int
}

func summarizeJoin(c config, round int, res *joinResult) joinRow {
	w := joinRow{config: c, round: round, hosts: res.hosts, fair: 1 / float64(len(res.hosts)), joinTook: res.joinTook,
		establishedSplit: res.establishedSplit, split: res.split, establishedFailed: res.establishedFailed, failed: res.failed}
	w.established = perHost(res.hosts, res.established)
	w.placed = perHost(res.hosts, res.placed)
	w.share = ratio(w.placed[len(w.placed)-1], len(res.placed))
	w.inFlight = res.inFlight
	var all []time.Duration
	for _, s := range res.ordinary {
		all = append(all, s.took)
	}
	w.p50, w.p99 = quantile(all, 0.50), quantile(all, 0.99)
	return w
}

func (w joinRow) progress() string {
	return fmt.Sprintf("round %d %-36s established %s  new %s  joining %.0f%%  in flight %s  p50 %v p99 %v  joined in %v  split %d/%d  failed %d/%d",
		w.round, w.config.name, joinInts(w.established), joinInts(w.placed), 100*w.share, joinMeans(w.inFlight), ms(w.p50), ms(w.p99),
		w.joinTook.Round(time.Millisecond), w.establishedSplit, w.split, w.establishedFailed, w.failed)
}

// renderJoin is the Markdown table of the joining runs and the line that
// says how they were made.
func renderJoin(st settings, rows []joinRow, configs []config) string {
	slices.SortStableFunc(rows, func(a, b joinRow) int {
		return slices.IndexFunc(configs, func(c config) bool { return c.name == a.config.name }) -
			slices.IndexFunc(configs, func(c config) bool { return c.name == b.config.name })
	})
	var b strings.Builder
	hosts := ""
	if len(rows) > 0 {
		hosts = strings.Join(rows[0].hosts, " / ")
	}
	fmt.Fprintf(&b, "| configuration | round | established sessions (%s) | new sessions (%s) | joining host's share of new sessions (fair %.0f%%) | requests in flight, mean per host (Envoy's rq_active every 250 ms) | p50 / p99 of the new sessions | sessions on two hosts (established, new) | failed requests (established, new) |\n",
		hosts, hosts, 100/float64(st.backends))
	b.WriteString("|---|---|---|---|---|---|---|---|---|\n")
	for _, w := range rows {
		fmt.Fprintf(&b, "| %s | %d | %s | %s | %.0f%% (%.2f×) | %s | %s / %s | %d, %d | %d, %d |\n",
			w.config.name, w.round, joinInts(w.established), joinInts(w.placed), 100*w.share, w.share/w.fair,
			joinMeans(w.inFlight), ms(w.p50), ms(w.p99), w.establishedSplit, w.split, w.establishedFailed, w.failed)
	}
	fmt.Fprintf(&b, "\n%d backends, each working on %d requests at a time for %v each (the rest wait in line); the pool starts on the first %d, "+
		"%d established sessions on them each sending a request every %v; after 1 s the last backend joins the service's pool and Envoy's cluster, "+
		"and from the moment Envoy has it healthy %d new sessions arrive evenly over %v, %d requests each %v apart (latency from send to the end "+
		"of the answer, new sessions only). %s.\n",
		st.backends, st.capacity, st.work, st.backends-1, st.established, st.gap, st.sessions, st.over, st.requests, st.gap, machine())
	return b.String()
}

// brokenJoin names every joining run in which a request failed or a
// session, established or new, was answered by two hosts: every
// configuration of this scenario is sticky.
func brokenJoin(rows []joinRow) error {
	var errs []error
	for _, w := range rows {
		if w.establishedFailed+w.failed > 0 {
			errs = append(errs, fmt.Errorf("round %d, %s: %d established and %d new requests failed", w.round, w.config.name, w.establishedFailed, w.failed))
		}
		if w.establishedSplit+w.split > 0 {
			errs = append(errs, fmt.Errorf("round %d, %s: %d established and %d new sessions answered by two hosts", w.round, w.config.name, w.establishedSplit, w.split))
		}
	}
	return errors.Join(errs...)
}

// joinMeans writes means with two decimals, "/" between ("none" for none).
func joinMeans(v []float64) string {
	if len(v) == 0 {
		return "none"
	}
	s := make([]string, len(v))
	for i, x := range v {
		s[i] = fmt.Sprintf("%.2f", x)
	}
	return strings.Join(s, " / ")
}
