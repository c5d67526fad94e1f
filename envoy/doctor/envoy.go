package doctor

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"gopkg.in/yaml.v3"

	"github.com/envoy-affinity/envoy-affinity/affinity/discovery"
)

// Envoy is the part of an Envoy's configuration the doctor reads: its
// listeners' HTTP connection managers, its route configurations and
// clusters, and each cluster's hosts.
type Envoy struct {
	// From is where the configuration was read: a file, or the admin
	// address of a running Envoy.
	From string
	// Listeners are the listeners, each with its HTTP connection managers.
	Listeners []Listener
	// Clusters are the clusters by name.
	Clusters map[string]map[string]any
	// Routes are the route configurations by name (static and RDS).
	Routes map[string]map[string]any
	// Members are each cluster's hosts, when known: the live hosts of a
	// running Envoy, or those a file lists (load_assignment, EDS from a
	// file). A cluster missing here was not known.
	Members map[string][]Member
	// Live: read from a running Envoy, whose services the doctor may ask
	// (the JWKS Envoy fetches).
	Live bool
	// ecds holds filter configurations sent by ECDS, by name.
	ecds map[string]any
}

// Listener is one listener's HTTP connection managers.
type Listener struct {
	Name string
	HCMs []map[string]any
}

// Member is one host of a cluster.
type Member struct {
	Address  string // ip:port
	Hostname string
	// Healthy is false when Envoy's health checks or outlier detection
	// took the host out (live only).
	Healthy bool
}

// ReadYAML reads an Envoy bootstrap file (YAML or JSON): its static
// listeners and clusters, and the hosts of clusters that list them or read
// them from a file (EDS from a file, relative to the bootstrap's folder).
func ReadYAML(path string) (*Envoy, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var boot map[string]any
	if err := yaml.Unmarshal(data, &boot); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return readBootstrap(path, boot), nil
}

// readBootstrap reads a bootstrap decoded from the file at path (an EDS
// file it names is read relative to path's folder).
func readBootstrap(path string, boot map[string]any) *Envoy {
	e := newEnvoy(path)
	static := get(boot, "static_resources")
	for _, l := range list(get(static, "listeners")) {
		e.addListener(l)
	}
	for _, c := range list(get(static, "clusters")) {
		e.addCluster(c)
	}
	for name, c := range e.Clusters {
		if la := get(c, "load_assignment"); la != nil {
			e.Members[name] = assignmentMembers(la)
			continue
		}
		file := str(get(c, "eds_cluster_config", "eds_config", "path_config_source", "path"))
		if file == "" {
			file = str(get(c, "eds_cluster_config", "eds_config", "path"))
		}
		if file == "" {
			continue
		}
		if !filepath.IsAbs(file) {
			file = filepath.Join(filepath.Dir(path), file)
		}
		if members, ok := edsFileMembers(file, name, str(get(c, "eds_cluster_config", "service_name"))); ok {
			e.Members[name] = members
		}
	}
	return e
}

func newEnvoy(source string) *Envoy {
	return &Envoy{From: source, Clusters: map[string]map[string]any{}, Routes: map[string]map[string]any{},
		Members: map[string][]Member{}, ecds: map[string]any{}}
}

func (e *Envoy) addListener(l any) {
	out := Listener{Name: str(get(l, "name"))}
	chains := list(get(l, "filter_chains"))
	if d := get(l, "default_filter_chain"); d != nil {
		chains = append(chains, d)
	}
	for _, chain := range chains {
		for _, f := range list(get(chain, "filters")) {
			if tc := obj(get(f, "typed_config")); typeName(tc) == typeHCM {
				out.HCMs = append(out.HCMs, tc)
			}
		}
	}
	e.Listeners = append(e.Listeners, out)
}

func (e *Envoy) addCluster(c any) {
	if m := obj(c); m != nil {
		e.Clusters[str(m["name"])] = m
	}
}

// assignmentMembers lists a ClusterLoadAssignment's hosts (healthy: a file
// says nothing of health).
func assignmentMembers(la any) []Member {
	var out []Member
	for _, group := range list(get(la, "endpoints")) {
		for _, lb := range list(get(group, "lb_endpoints")) {
			sa := get(lb, "endpoint", "address", "socket_address")
			port, _ := number(get(sa, "port_value"))
			if str(get(sa, "address")) == "" {
				continue
			}
			out = append(out, Member{Address: net.JoinHostPort(str(get(sa, "address")), strconv.Itoa(int(port))),
				Hostname: str(get(lb, "endpoint", "hostname")), Healthy: true})
		}
	}
	return out
}

// edsFileMembers reads the hosts of a cluster from an EDS file.
func edsFileMembers(path, cluster, service string) ([]Member, bool) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, false
	}
	var doc map[string]any
	if yaml.Unmarshal(data, &doc) != nil {
		return nil, false
	}
	for _, r := range list(doc["resources"]) {
		if name := str(get(r, "cluster_name")); name == cluster || (service != "" && name == service) {
			return assignmentMembers(r), true
		}
	}
	return nil, false
}

// ReadAdmin reads a running Envoy's configuration from its admin API
// (addr is host:port or a URL): /config_dump with EDS, and /clusters for
// the hosts and their health.
func ReadAdmin(ctx context.Context, client *http.Client, addr string) (*Envoy, error) {
	base := addr
	if !strings.Contains(base, "://") {
		base = "http://" + base
	}
	base = strings.TrimRight(base, "/")
	var dump struct {
		Configs []map[string]any `json:"configs"`
	}
	if err := getJSON(ctx, client, base+"/config_dump?include_eds", &dump); err != nil {
		return nil, err
	}
	e := newEnvoy(addr)
	e.Live = true
	for _, c := range dump.Configs {
		switch strings.TrimPrefix(typeName(c), "envoy.admin.v3.") {
		case "ListenersConfigDump":
			for _, l := range list(c["static_listeners"]) {
				e.addListener(get(l, "listener"))
			}
			for _, l := range list(c["dynamic_listeners"]) {
				if l := get(l, "active_state", "listener"); l != nil {
					e.addListener(l)
				}
			}
		case "ClustersConfigDump":
			for _, cl := range list(c["static_clusters"]) {
				e.addCluster(get(cl, "cluster"))
			}
			for _, cl := range list(c["dynamic_active_clusters"]) {
				e.addCluster(get(cl, "cluster"))
			}
		case "RoutesConfigDump":
			for _, r := range append(list(c["static_route_configs"]), list(c["dynamic_route_configs"])...) {
				if rc := obj(get(r, "route_config")); rc != nil {
					e.Routes[str(rc["name"])] = rc
				}
			}
		case "EcdsConfigDump":
			for _, f := range list(c["ecds_filters"]) {
				if ef := get(f, "ecds_filter"); ef != nil {
					e.ecds[str(get(ef, "name"))] = get(ef, "typed_config")
				}
			}
		}
	}
	// Read as the service's Envoy host source reads it, so that a host the
	// doctor calls healthy is one the service would keep.
	var clusters discovery.AdminClusters
	if err := getJSON(ctx, client, base+"/clusters?format=json", &clusters); err != nil {
		return nil, err
	}
	for _, c := range clusters.ClusterStatuses {
		members := []Member{}
		for _, h := range c.HostStatuses {
			members = append(members, Member{Address: h.Addr(), Hostname: h.Hostname, Healthy: !h.Down()})
		}
		e.Members[c.Name] = members
	}
	return e, nil
}

func getJSON(ctx context.Context, client *http.Client, url string, into any) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	resp, err := client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		body, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
		return fmt.Errorf("%s: %s %s", url, resp.Status, strings.TrimSpace(string(body)))
	}
	if err := json.NewDecoder(resp.Body).Decode(into); err != nil {
		return fmt.Errorf("%s: %w", url, err)
	}
	return nil
}

// routeConfig is an HTTP connection manager's route configuration: inline,
// or by RDS name (nil when Envoy has not received it).
func (e *Envoy) routeConfig(hcm map[string]any) map[string]any {
	if rc := obj(hcm["route_config"]); rc != nil {
		return rc
	}
	return e.Routes[str(get(hcm, "rds", "route_config_name"))]
}

// filterConfig is an HTTP filter's configuration: its typed_config, or
// what ECDS sent for it.
func (e *Envoy) filterConfig(f any) map[string]any {
	if tc := obj(get(f, "typed_config")); tc != nil {
		return tc
	}
	if get(f, "config_discovery") != nil {
		if tc := obj(e.ecds[str(get(f, "name"))]); tc != nil {
			return tc
		}
		return obj(get(f, "config_discovery", "default_config"))
	}
	return nil
}
