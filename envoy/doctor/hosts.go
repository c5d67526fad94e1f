package doctor

import (
	"fmt"

	"github.com/envoy-affinity/envoy-affinity/affinity"
)

// hosts compares a pool's hosts with the Envoy cluster's members.
func (x *examination) hosts(p *affinity.Pool, cluster string) {
	members, known := x.e.Members[cluster]
	if !known || (p.Discovery != nil && p.Discovery.Kind == affinity.DiscoveryEnvoy) {
		return // unknown, or the pool reads them from Envoy itself
	}
	if p.Discovery != nil && len(p.Specs) == 0 {
		return // a DNS pool not yet resolved
	}
	where := fmt.Sprintf("pool %s, cluster %q", p.Name, cluster)
	byAddr := map[string]Member{}
	for _, m := range members {
		byAddr[m.Address] = m
	}
	inPool := map[string]bool{}
	for _, h := range p.Specs {
		inPool[h.Address] = true
		m, ok := byAddr[h.Address]
		switch {
		case !ok:
			x.r.add(hostMissing.at(where, fmt.Sprintf("the pool's host %s is not a member of Envoy's cluster", h.Address)))
		case m.Hostname != "" && h.Name != "" && m.Hostname != h.Name:
			x.r.add(hostName.at(where, fmt.Sprintf("host %s is %q in the pool, %q in Envoy", h.Address, h.Name, m.Hostname),
				"${hostname}", m.Hostname))
		}
	}
	for _, m := range members {
		if !inPool[m.Address] {
			x.r.add(hostExtra.at(where, fmt.Sprintf("Envoy's member %s is not one of the pool's hosts", m.Address)))
		}
	}
}
