package doctor

import (
	"context"
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"time"

	"github.com/envoy-affinity/envoy-affinity/affinity"
)

// Service is what the doctor knows of the service: the pools in force and
// the signing keys.
type Service struct {
	Pools []*affinity.Pool
	// Keys signs the session tokens (nil: the JWKS is not compared).
	Keys *affinity.Keyring
	// Now is when the signing key is chosen.
	Now time.Time
}

// Check compares Envoy's configuration with the service's pools. When e is
// live, client fetches the JWKS Envoy reads (nil: it is not fetched).
func Check(ctx context.Context, e *Envoy, svc Service, client *http.Client) *Report {
	x := &examination{ctx: ctx, e: e, svc: svc, client: client, r: &Report{Envoy: e.From}}
	for _, p := range svc.Pools {
		x.r.Pools = append(x.r.Pools, p.Name)
		x.pool(p)
	}
	x.r.sort()
	return x.r
}

// examination is one Envoy examined against the service: each rule of the
// catalogue its steps find broken is added to the report.
type examination struct {
	ctx    context.Context
	e      *Envoy
	svc    Service
	client *http.Client
	r      *Report
}

// pool checks everything one pool needs.
func (x *examination) pool(p *affinity.Pool) {
	all := x.sites()
	var targets []string
	if p.MatchAll {
		service := x.serviceClusters(all)
		for _, s := range all {
			if len(s.ours()) == 0 {
				continue
			}
			for _, rt := range s.routes {
				for _, cl := range rt.clusters() {
					if !service[cl] && !slices.Contains(targets, cl) {
						targets = append(targets, cl)
					}
				}
			}
		}
		if len(targets) == 0 && !slices.ContainsFunc(all, func(s *site) bool { return len(s.ours()) > 0 }) {
			x.r.add(extProcNowhere.at("pool "+p.Name, "no HTTP connection manager has an ext_proc filter"))
			return
		}
		if len(targets) == 0 {
			x.r.add(routeNowhere.at("pool "+p.Name, "no route leads to a cluster through an HTTP connection manager with an ext_proc filter"))
			return
		}
	} else {
		targets = []string{p.Name}
		if _, ok := x.e.Clusters[p.Name]; !ok {
			x.r.add(poolClusterMissing.at("pool "+p.Name,
				fmt.Sprintf("Envoy has no cluster %q (a named pool takes the requests routed to the cluster of its name)", p.Name),
				"${cluster}", strconv.Quote(p.Name)))
			return
		}
	}
	var sites []*site
	for _, s := range all {
		var routes []route
		for _, rt := range s.routes {
			if slices.ContainsFunc(rt.clusters(), func(cl string) bool { return slices.Contains(targets, cl) }) {
				routes = append(routes, rt)
			}
		}
		if len(routes) > 0 {
			s.routes = routes
			sites = append(sites, s)
		}
	}
	if len(sites) == 0 {
		x.r.add(routeMissing.at(fmt.Sprintf("cluster %q", targets[0]), "no route of any listener sends requests to the cluster",
			"${pool}", p.Name))
		return
	}
	var payload string
	for _, s := range sites {
		if k := x.site(p, s); k != "" {
			payload = k
		}
	}
	for _, cl := range targets {
		x.cluster(p, cl, sites, payload)
		x.hosts(p, cl)
	}
	if p.Discovery != nil && p.Discovery.Kind == affinity.DiscoveryEnvoy {
		if _, ok := x.e.Clusters[p.Discovery.Envoy.Cluster]; !ok {
			x.r.add(discoveryCluster.at("pool "+p.Name,
				fmt.Sprintf("discovery.envoy names cluster %q, which Envoy does not have", p.Discovery.Envoy.Cluster)))
		}
	}
}

// usesMetadata tells whether the pool's decision reaches Envoy as envoy.lb
// metadata (not through an output header only a platform reads).
func usesMetadata(p *affinity.Pool) bool {
	return p.Output.Header == "" && p.Output.StatefulSession == ""
}

// rebinds tells whether the pool re-binds failed-over sessions: the
// service must see the response another host served.
func rebinds(p *affinity.Pool) bool {
	return usesMetadata(p) && !p.Failback && (p.Mode == affinity.ModeVerified || p.Mode == affinity.ModeOpaque)
}
