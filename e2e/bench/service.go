package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"

	"github.com/envoy-affinity/envoy-affinity/internal/launch"
)

// serviceAlone measures the service by itself: the request-headers message
// of an established opaque session (one of -sessions, opened through Envoy
// first), sent by affinity-load -extproc as Envoy sends it, one stream per
// request, at 1 and 64 streams at a time. With two or more CPUs the service
// runs on CPU 0 and the client on CPU 1, so the figures are the server's.
func serviceAlone(set settings, bins launch.Binaries, dir string) error {
	ctx := context.Background()
	st, err := launch.StartStack(ctx, bins, launch.Options{Dir: dir, Mode: "opaque"})
	if err != nil {
		return err
	}
	defer st.Close()
	cookies, err := establish(ctx, st, config{name: "opaque", mode: "opaque"}, dir, set.sessions)
	if err != nil {
		return err
	}
	pinned := false
	if _, err := exec.LookPath("taskset"); err == nil && runtime.NumCPU() >= 2 {
		if out, err := exec.Command("taskset", "-a", "-p", "-c", "0", strconv.Itoa(st.Server.Pid())).CombinedOutput(); err != nil {
			return fmt.Errorf("taskset: %v: %s", err, out)
		}
		pinned = true
	}
	type run struct {
		streams int
		health  bool // grpc.health.v1 Check: the floor of a gRPC call here
	}
	levels := []run{{1, false}, {1, true}, {64, false}, {64, true}}
	results := map[run][]loadResult{}
	for r := 1; r <= set.rounds; r++ {
		for _, c := range levels {
			args := []string{set.load, "-extproc", "127.0.0.1:" + strconv.Itoa(st.GRPCPort), "-cookies", cookies,
				"-c", strconv.Itoa(c.streams), "-duration", set.duration.String()}
			if c.health {
				args = append(args, "-health")
			}
			if pinned {
				args = append([]string{"taskset", "-c", "1"}, args...)
			}
			out, err := exec.Command(args[0], args[1:]...).Output()
			if err != nil {
				return fmt.Errorf("affinity-load -extproc: %w", err)
			}
			var res loadResult
			if err := json.Unmarshal(out, &res); err != nil {
				return err
			}
			if res.Errors > 0 {
				return fmt.Errorf("%d of %d streams failed", res.Errors, res.Requests)
			}
			fmt.Fprintf(os.Stderr, "round %d, %+v: %.0f calls/s, p50 %d µs, p99 %d µs\n", r, c, res.RPS, res.P50Micros, res.P99Micros)
			results[c] = append(results[c], res)
		}
	}
	var b strings.Builder
	fmt.Fprintf(&b, "| call | at a time | calls/s (min–max) | p50 (min–max) | p99 (min–max) |\n|---|---|---|---|---|\n")
	for _, c := range levels {
		rs := results[c]
		rps := make([]float64, len(rs))
		p50 := make([]int64, len(rs))
		p99 := make([]int64, len(rs))
		for i, r := range rs {
			rps[i], p50[i], p99[i] = r.RPS, r.P50Micros, r.P99Micros
		}
		lo, hi := spread(rps)
		l50, h50 := spread(p50)
		l99, h99 := spread(p99)
		call := "ext_proc stream, established session"
		if c.health {
			call = "grpc.health.v1 Check (no work: the floor)"
		}
		fmt.Fprintf(&b, "| %s | %d | %.0f (%.0f–%.0f) | %d µs (%d–%d) | %d µs (%d–%d) |\n", call, c.streams, median(rps), lo, hi, median(p50), l50, h50, median(p99), l99, h99)
	}
	where := "client and service sharing the CPUs"
	if pinned {
		where = "the service pinned to CPU 0, the client to CPU 1 (taskset)"
	}
	fmt.Fprintf(&b, "\nMedians of %d interleaved rounds, %v per run, %d established opaque sessions, %s; %d cores (%s), %s.\n",
		set.rounds, set.duration, set.sessions, where, runtime.NumCPU(), cpuModel(), runtime.Version())
	fmt.Print(b.String())
	return nil
}
