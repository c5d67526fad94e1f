// Command affinity-load is the benchmark's load generator. Each simulated
// session sends its own session cookie (one line of -cookies each, e.g.
// "affinity=…"; none when the file is empty or absent, so every request is
// a new session), or its own session header (a line "X-Session-Id: …").
//
// Closed loop (-c N): N connections send back to back; reports the
// saturation throughput. Open loop (-rate R): requests are scheduled at R per
// second whatever the answers; a request that has to wait for earlier ones
// (all -max-in-flight slots busy) counts from when it was due, not from when
// it could be sent, so slow answers do not hide the requests queued behind
// them (coordinated omission). The generator's own timer lateness is not
// counted. Both stop by themselves after -duration.
//
// -extproc ADDR plays Envoy against the service itself: -c ext_proc streams
// at a time, each one request-headers message.
package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"os"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Result is what a run prints, as one JSON object.
type Result struct {
	Mode       string  `json:"mode"`
	Requests   int64   `json:"requests"`
	Errors     int64   `json:"errors"`
	Seconds    float64 `json:"seconds"`
	RPS        float64 `json:"rps"`
	P50Micros  int64   `json:"p50_us"`
	P90Micros  int64   `json:"p90_us"`
	P99Micros  int64   `json:"p99_us"`
	P999Micros int64   `json:"p999_us"`
}

func main() {
	if err := run(os.Args[1:], os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "affinity-load:", err)
		os.Exit(1)
	}
}

func run(args []string, out io.Writer) error {
	fs := flag.NewFlagSet("affinity-load", flag.ContinueOnError)
	url := fs.String("url", "", "URL to send GET requests to")
	cookiesFile := fs.String("cookies", "", "file with one session cookie per line")
	conns := fs.Int("c", 0, "closed loop: this many connections back to back")
	rate := fs.Float64("rate", 0, "open loop: requests per second")
	duration := fs.Duration("duration", 10*time.Second, "how long to send")
	maxInFlight := fs.Int("max-in-flight", 512, "open loop: requests outstanding at most (late ones wait, and their wait counts)")
	extproc := fs.String("extproc", "", "instead of -url: the service's ext_proc gRPC address, played as Envoy plays it (one stream per request, -c at a time)")
	health := fs.Bool("health", false, "with -extproc: a grpc.health.v1 Check per request instead (the floor of a gRPC call)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	cookies, err := readCookies(*cookiesFile)
	if err != nil {
		return err
	}
	if *extproc != "" {
		if *url != "" || *conns <= 0 || *rate > 0 {
			return errors.New("-extproc takes -c, not -url or -rate")
		}
		res, err := streamLoop(*extproc, cookies, *conns, *duration, *health)
		if err != nil {
			return err
		}
		return json.NewEncoder(out).Encode(res)
	}
	if *url == "" || (*conns > 0) == (*rate > 0) {
		return errors.New("give -url and one of -c or -rate")
	}
	var res Result
	if *conns > 0 {
		res = closedLoop(*url, cookies, *conns, *duration)
	} else {
		res = openLoop(*url, cookies, *rate, *duration, *maxInFlight)
	}
	return json.NewEncoder(out).Encode(res)
}

func readCookies(path string) ([]string, error) {
	if path == "" {
		return nil, nil
	}
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var out []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if line := sc.Text(); line != "" {
			out = append(out, line)
		}
	}
	return out, sc.Err()
}

// sessionHeader is the request header a line of -cookies is sent as: a
// header line "Name: value" as it is, anything else as the Cookie header.
func sessionHeader(line string) (name, value string) {
	if name, value, ok := strings.Cut(line, ": "); ok && !strings.ContainsAny(name, "=; ") {
		return name, value
	}
	return "Cookie", line
}

// client is one keep-alive connection's worth of HTTP client.
func client() *http.Client {
	return &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: 1, DisableCompression: true}}
}

// send makes one request with a random session's cookie.
func send(c *http.Client, url string, cookies []string, rng *rand.Rand) error {
	req, err := http.NewRequest(http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	if len(cookies) > 0 {
		name, value := sessionHeader(cookies[rng.IntN(len(cookies))])
		req.Header.Set(name, value)
	}
	resp, err := c.Do(req)
	if err != nil {
		return err
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("status %d", resp.StatusCode)
	}
	return nil
}

func closedLoop(url string, cookies []string, conns int, d time.Duration) Result {
	return backToBack("closed", conns, d, func(w int) func() (time.Duration, error) {
		c, rng := client(), rand.New(rand.NewPCG(uint64(w), 7))
		return func() (time.Duration, error) {
			t0 := time.Now()
			err := send(c, url, cookies, rng)
			return time.Since(t0), err
		}
	})
}

// backToBack runs conns workers for d, each calling its own call (made by
// worker) back to back, and sums them up: every call counts, a failed one
// as an error without a latency.
func backToBack(mode string, conns int, d time.Duration, worker func(w int) func() (time.Duration, error)) Result {
	var reqs, errs atomic.Int64
	lats := make([][]time.Duration, conns)
	start := time.Now()
	deadline := start.Add(d)
	var wg sync.WaitGroup
	for w := range conns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			call := worker(w)
			for time.Now().Before(deadline) {
				took, err := call()
				reqs.Add(1)
				if err != nil {
					errs.Add(1)
					continue
				}
				lats[w] = append(lats[w], took)
			}
		}()
	}
	wg.Wait()
	var all []time.Duration
	for _, l := range lats {
		all = append(all, l...)
	}
	return summarize(mode, reqs.Load(), errs.Load(), time.Since(start), all)
}

func openLoop(url string, cookies []string, rate float64, d time.Duration, maxInFlight int) Result {
	interval := time.Duration(float64(time.Second) / rate)
	total := int(d.Seconds() * rate)
	// One transport: a request reuses any idle connection, as a browser
	// population behind a proxy would; slots bound the requests in flight.
	shared := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: maxInFlight, DisableCompression: true}}
	slots := make(chan *http.Client, maxInFlight)
	for range maxInFlight {
		slots <- shared
	}
	var errs atomic.Int64
	lat := make([]time.Duration, total) // each request writes its own slot
	start := time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), d+15*time.Second)
	defer cancel()
	var wg sync.WaitGroup
	for i := range total {
		// from is when the request counts from: when it was due if the
		// generator is behind (earlier requests held every slot: the
		// system's delay, which must count), or when the generator woke for
		// it (a timer wakes late by itself, here by about half a
		// millisecond, which is not the system's delay).
		from := start.Add(time.Duration(i) * interval)
		if wait := time.Until(from); wait > 0 {
			time.Sleep(wait)
			from = time.Now()
		}
		var c *http.Client
		select {
		case c = <-slots:
		case <-ctx.Done():
		}
		if c == nil {
			total = i // the run's time is up: stop scheduling
			break
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(uint64(i), 11))
			if err := send(c, url, cookies, rng); err != nil {
				errs.Add(1)
			}
			// Queueing behind slow answers counts.
			lat[i] = time.Since(from)
			slots <- c
		}()
	}
	wg.Wait()
	return summarize("open", int64(total), errs.Load(), time.Since(start), lat[:total])
}

func summarize(mode string, reqs, errs int64, elapsed time.Duration, lat []time.Duration) Result {
	slices.Sort(lat)
	at := func(q float64) int64 {
		if len(lat) == 0 {
			return 0
		}
		return lat[min(len(lat)-1, int(q*float64(len(lat))))].Microseconds()
	}
	return Result{Mode: mode, Requests: reqs, Errors: errs, Seconds: elapsed.Seconds(), RPS: float64(reqs) / elapsed.Seconds(),
		P50Micros: at(0.50), P90Micros: at(0.90), P99Micros: at(0.99), P999Micros: at(0.999)}
}
