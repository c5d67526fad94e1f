package discovery

import (
	"context"
	"net"
	"slices"
	"strconv"
	"strings"

	"github.com/envoy-affinity/envoy-affinity/affinity"
)

// DNS resolves a name into hosts: A and AAAA records with a fixed port, or
// SRV records with their own ports and weights (e.g. a Kubernetes headless
// Service).
type DNS struct {
	Name     string
	Port     int
	SRV      bool
	Resolver *net.Resolver
}

// NewDNS resolves with the system's resolver, or asks server (ip:port) when
// it is given.
func NewDNS(name string, port int, srv bool, server string) *DNS {
	r := net.DefaultResolver
	if server != "" {
		r = &net.Resolver{PreferGo: true, Dial: func(ctx context.Context, network, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, network, server)
		}}
	}
	return &DNS{Name: name, Port: port, SRV: srv, Resolver: r}
}

// Hosts implements Source.
func (d *DNS) Hosts(ctx context.Context) ([]affinity.HostSpec, error) {
	var hosts []affinity.HostSpec
	if d.SRV {
		_, srvs, err := d.Resolver.LookupSRV(ctx, "", "", d.Name)
		if err != nil {
			return nil, err
		}
		for _, s := range srvs {
			ips, err := d.Resolver.LookupNetIP(ctx, "ip", s.Target)
			if err != nil {
				return nil, err
			}
			for _, ip := range ips {
				hosts = append(hosts, affinity.HostSpec{Address: net.JoinHostPort(ip.Unmap().String(), strconv.Itoa(int(s.Port))), Weight: uint32(max(s.Weight, 1))})
			}
		}
	} else {
		ips, err := d.Resolver.LookupNetIP(ctx, "ip", d.Name)
		if err != nil {
			return nil, err
		}
		for _, ip := range ips {
			hosts = append(hosts, affinity.HostSpec{Address: net.JoinHostPort(ip.Unmap().String(), strconv.Itoa(d.Port)), Weight: 1})
		}
	}
	slices.SortFunc(hosts, func(a, b affinity.HostSpec) int { return strings.Compare(a.Address, b.Address) })
	return slices.CompactFunc(hosts, func(a, b affinity.HostSpec) bool { return a.Address == b.Address }), nil
}
