package discovery

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/envoy-affinity/envoy-affinity/affinity"
)

// EnvoyAdmin reads one cluster's hosts from Envoy's admin API
// (/clusters?format=json): addresses, weights, hostnames and health. A host
// failing Envoy's active health check, ejected by outlier detection, or
// unhealthy or timed out in EDS is left out (its sessions move to their
// successors); a host EDS reports as draining, or pending removal, drains for
// DrainTimeout from when it was first seen so.
type EnvoyAdmin struct {
	URL          string // http://host:port
	Cluster      string
	DrainTimeout time.Duration
	Client       *http.Client

	mu         sync.Mutex
	drainSince map[string]time.Time
}

// NewEnvoyAdmin reads cluster from the admin API at admin (host:port or a URL).
func NewEnvoyAdmin(admin, cluster string, drainTimeout time.Duration) *EnvoyAdmin {
	return &EnvoyAdmin{URL: AdminURL(admin), Cluster: cluster, DrainTimeout: drainTimeout,
		Client: &http.Client{Timeout: 2 * time.Second}, drainSince: map[string]time.Time{}}
}

// AdminClusters is the part of Envoy's /clusters?format=json that the
// service reads: each cluster's hosts with their addresses, weights,
// hostnames and health.
type AdminClusters struct {
	ClusterStatuses []struct {
		Name         string      `json:"name"`
		HostStatuses []AdminHost `json:"host_statuses"`
	} `json:"cluster_statuses"`
}

// AdminHost is one host of a cluster in /clusters?format=json.
type AdminHost struct {
	Address struct {
		SocketAddress struct {
			Address   string `json:"address"`
			PortValue int    `json:"port_value"`
		} `json:"socket_address"`
	} `json:"address"`
	Hostname     string `json:"hostname"`
	Weight       int    `json:"weight"`
	HealthStatus struct {
		FailedActiveHealthCheck bool   `json:"failed_active_health_check"`
		FailedOutlierCheck      bool   `json:"failed_outlier_check"`
		FailedActiveDegraded    bool   `json:"failed_active_degraded_check"`
		PendingDynamicRemoval   bool   `json:"pending_dynamic_removal"`
		ExcludedViaImmediateHC  bool   `json:"excluded_via_immediate_hc_fail"`
		ActiveHCTimeout         bool   `json:"active_hc_timeout"`
		EDSHealthStatus         string `json:"eds_health_status"`
	} `json:"health_status"`
	// Stats are the host's counters and gauges (rq_active: its requests
	// in flight).
	Stats []AdminStat `json:"stats"`
}

// AdminStat is one statistic of a host in /clusters?format=json. Envoy
// writes its value as a JSON string (a uint64) and leaves zeros out.
type AdminStat struct {
	Name  string      `json:"name"`
	Value json.Number `json:"value"`
}

// Stat is the value of the host's statistic name (0 when Envoy lists none).
func (h AdminHost) Stat(name string) float64 {
	for _, s := range h.Stats {
		if s.Name == name {
			v, _ := s.Value.Float64()
			return v
		}
	}
	return 0
}

// Addr is the host's ip:port.
func (h AdminHost) Addr() string {
	return net.JoinHostPort(h.Address.SocketAddress.Address, strconv.Itoa(h.Address.SocketAddress.PortValue))
}

// Down tells whether Envoy takes the host out: it failed Envoy's active
// health check, was ejected by outlier detection, or EDS says it is
// unhealthy or timed out.
func (h AdminHost) Down() bool {
	hs := h.HealthStatus
	return hs.FailedActiveHealthCheck || hs.FailedOutlierCheck || hs.ExcludedViaImmediateHC || hs.ActiveHCTimeout ||
		hs.EDSHealthStatus == "UNHEALTHY" || hs.EDSHealthStatus == "TIMEOUT"
}

// ReadClusters reads /clusters?format=json from the Envoy admin API at url
// (http://host:port).
func ReadClusters(ctx context.Context, client *http.Client, url string) (*AdminClusters, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url+"/clusters?format=json", nil)
	if err != nil {
		return nil, err
	}
	resp, err := client.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("%s/clusters: %s", url, resp.Status)
	}
	var out AdminClusters
	if err := json.NewDecoder(resp.Body).Decode(&out); err != nil {
		return nil, fmt.Errorf("%s/clusters: %w", url, err)
	}
	return &out, nil
}

// AdminURL is an admin address (host:port or a URL) as a base URL.
func AdminURL(admin string) string {
	if !strings.Contains(admin, "://") {
		admin = "http://" + admin
	}
	return strings.TrimRight(admin, "/")
}

var hostName = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$`)

// Hosts implements Source.
func (e *EnvoyAdmin) Hosts(ctx context.Context) ([]affinity.HostSpec, error) {
	out, err := ReadClusters(ctx, e.Client, e.URL)
	if err != nil {
		return nil, err
	}
	now := time.Now()
	e.mu.Lock()
	defer e.mu.Unlock()
	for _, c := range out.ClusterStatuses {
		if c.Name != e.Cluster {
			continue
		}
		var hosts []affinity.HostSpec
		draining := map[string]bool{}
		for _, h := range c.HostStatuses {
			hs := h.HealthStatus
			addr := h.Addr()
			if h.Down() {
				continue
			}
			spec := affinity.HostSpec{Address: addr, Weight: uint32(max(h.Weight, 1))}
			if hostName.MatchString(h.Hostname) {
				spec.Name = h.Hostname
			}
			if hs.EDSHealthStatus == "DRAINING" || hs.PendingDynamicRemoval {
				since, ok := e.drainSince[addr]
				if !ok {
					since = now
					e.drainSince[addr] = since
				}
				spec.DrainingUntil = since.Add(e.DrainTimeout)
				draining[addr] = true
			}
			hosts = append(hosts, spec)
		}
		for addr := range e.drainSince {
			if !draining[addr] {
				delete(e.drainSince, addr)
			}
		}
		slices.SortFunc(hosts, func(a, b affinity.HostSpec) int { return strings.Compare(a.Address, b.Address) })
		return hosts, nil
	}
	return nil, fmt.Errorf("no cluster %q in the Envoy admin API at %s", e.Cluster, e.URL)
}
