package main

import (
	"cmp"
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"slices"
	"strconv"
	"time"

	"github.com/envoy-affinity/envoy-affinity/affinity"
	"github.com/envoy-affinity/envoy-affinity/internal/launch"
)

// adminRequests is Envoy's count of requests to its admin API: a load
// block's reads, and the bench's own stat reads (measure leaves them out).
const adminRequests = "http.admin.downstream_rq_total"

// loadConfigs are verified and native modes with and without a load block
// (all is the default list: the baseline, Envoy's cookie, ..., verified,
// native). Established sessions never reach the service in these modes,
// so what the block may change is the admin reads' cost to Envoy.
func loadConfigs(all []config) []config {
	every := func(d time.Duration) *launch.Load { return &launch.Load{Interval: d} }
	return []config{all[0], all[1],
		all[4],
		{name: "verified, load block (interval 1s, the default)", mode: "verified", load: &launch.Load{}},
		{name: "verified, load block (interval 100ms)", mode: "verified", load: every(100 * time.Millisecond)},
		all[5],
		{name: "native, load block (interval 100ms)", mode: "native", load: every(100 * time.Millisecond)},
	}
}

// checkReads fails a configuration with a load block whose Envoy saw fewer
// than half the admin reads its interval makes: its figures would be
// those of a block that did not read.
func checkReads(c config, adminPerS float64) error {
	if c.load == nil {
		return nil
	}
	interval := cmp.Or(c.load.Interval, affinity.DefaultLoadInterval)
	if adminPerS < 0.5/interval.Seconds() {
		return fmt.Errorf("Envoy's admin API saw %.1f requests/s; the load block reads every %v", adminPerS, interval)
	}
	return nil
}

// adminReadCost measures the Envoy CPU time one /clusters?format=json read
// costs: a verified-mode Envoy with three hosts and no traffic, read back to
// back over one connection, less what the same Envoy spends idle for as
// long, in three batches. It returns a line for the report.
func adminReadCost(bins launch.Binaries, dir string) (string, error) {
	const reads, batches = 2000, 3
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", err
	}
	st, err := launch.StartStack(context.Background(), bins, launch.Options{Dir: dir, Mode: "verified"})
	if err != nil {
		return "", err
	}
	defer st.Close()
	url := "http://127.0.0.1:" + strconv.Itoa(st.AdminPort) + "/clusters?format=json"
	client := &http.Client{Timeout: 5 * time.Second}
	defer client.CloseIdleConnections()
	pid := st.Envoy.Pid()
	var costs []time.Duration
	var size int64
	for range batches {
		cpu0, err := cpuTime(pid)
		if err != nil {
			return "", err
		}
		start := time.Now()
		for range reads {
			resp, err := client.Get(url)
			if err != nil {
				return "", err
			}
			size, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode != http.StatusOK {
				return "", fmt.Errorf("%s: %s", url, resp.Status)
			}
		}
		elapsed := time.Since(start)
		cpu1, _ := cpuTime(pid)
		time.Sleep(elapsed)
		cpu2, _ := cpuTime(pid)
		costs = append(costs, ((cpu1-cpu0)-(cpu2-cpu1))/reads)
	}
	lo, hi := slices.Min(costs), slices.Max(costs)
	return fmt.Sprintf("One `/clusters?format=json` read (%d bytes: verified.yaml's three clusters, the app's 3 hosts among them) costs an idle Envoy %.1f µs of CPU (%.1f–%.1f over %d batches of %d reads back to back, less the same Envoy's idle CPU over as long).\n",
		size, us(median(costs)), us(lo), us(hi), batches, reads), nil
}
