package discovery

import (
	"context"
	"fmt"
	"net/http"
)

// RequestsInFlight reads the requests in flight of each host of cluster
// (Envoy's rq_active gauge) from the Envoy admin API at url, by ip:port.
// Hosts Envoy takes out count too: their requests still run.
func RequestsInFlight(ctx context.Context, client *http.Client, url, cluster string) (map[string]float64, error) {
	out, err := ReadClusters(ctx, client, url)
	if err != nil {
		return nil, err
	}
	for _, c := range out.ClusterStatuses {
		if c.Name != cluster {
			continue
		}
		load := make(map[string]float64, len(c.HostStatuses))
		for _, h := range c.HostStatuses {
			load[h.Addr()] += h.Stat("rq_active")
		}
		return load, nil
	}
	return nil, fmt.Errorf("no cluster %q in the Envoy admin API at %s", cluster, url)
}
