package launch

import (
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"
)

// The settings of the service's config a stack writes (Options), each as a
// type of its own: a test names a setting and the stack writes the YAML, so
// the file stays one the stack can rewrite (SetHosts, Drain).

// KeySource is one entry of the pool's key_sources, in the order given.
type KeySource struct {
	// Type is cookie, header, app_cookie, query, client_address or
	// upstream_header.
	Type string
	// Name is the header, cookie or query parameter (empty: left out).
	Name string
	// TrustedHops is client_address's trusted_hops (0: left out).
	TrustedHops int
	// Envelope is upstream_header's envelope (empty: left out).
	Envelope string
}

// Output is the pool's output block: the request headers the decision is
// written to (each left out when empty).
type Output struct {
	Header                string
	StatefulSessionHeader string
}

// UpstreamHeaders is the pool's upstream_headers block: the headers that
// tell the application why its session moved and where it would go.
type UpstreamHeaders struct {
	Rebound, Successor string
}

// Health is the pool's health block.
type Health struct {
	// ActiveInterval and ActiveTimeout turn on active checks (off when the
	// interval is 0).
	ActiveInterval, ActiveTimeout time.Duration
	// Passive turns on passive health with its defaults.
	Passive bool
}

// Load is the pool's load block, reading every Envoy of the stack.
type Load struct {
	// Interval and Factor are left out when 0 (the defaults).
	Interval time.Duration
	Factor   float64
}

// RedisStore is the store's redis block: the Redis the replicas share.
type RedisStore struct {
	// Mode is single (left out when empty), sentinel or cluster.
	Mode      string
	Addresses []string
	// SyncInterval and Timeout are left out when 0 (the defaults).
	SyncInterval, Timeout time.Duration
}

// WriteConfig writes the server's config with the given backends (by index)
// in its one pool. The cookie is not Secure: the tests speak plain HTTP.
func (s *Stack) WriteConfig(backends ...int) error {
	s.hosts = append([]int(nil), backends...)
	var b strings.Builder
	o := &s.opts
	fmt.Fprintf(&b, "keys:\n  file: keys.txt\n  sign_delay: %s\n", o.SignDelay)
	if r := o.Store; r != nil {
		b.WriteString("store:\n  redis:\n")
		if r.Mode != "" {
			fmt.Fprintf(&b, "    mode: %s\n", r.Mode)
		}
		fmt.Fprintf(&b, "    addresses: ['%s']\n", strings.Join(r.Addresses, "', '"))
		if r.SyncInterval > 0 {
			fmt.Fprintf(&b, "    sync_interval: %s\n", r.SyncInterval)
		}
		if r.Timeout > 0 {
			fmt.Fprintf(&b, "    timeout: %s\n", r.Timeout)
		}
	}
	fmt.Fprintf(&b, "pools:\n  - mode: %s\n    strict: %t\n    cookie:\n      secure: false\n", o.Mode, o.Strict)
	if o.PoolName != "" {
		fmt.Fprintf(&b, "    name: %s\n", o.PoolName)
	}
	if o.Failback {
		b.WriteString("    failback: true\n")
	}
	if o.Output != (Output{}) {
		b.WriteString("    output:\n")
		if o.Output.Header != "" {
			fmt.Fprintf(&b, "      header: %s\n", o.Output.Header)
		}
		if o.Output.StatefulSessionHeader != "" {
			fmt.Fprintf(&b, "      stateful_session_header: %s\n", o.Output.StatefulSessionHeader)
		}
	}
	if len(o.KeySources) > 0 {
		b.WriteString("    key_sources:\n")
		for _, k := range o.KeySources {
			fields := []string{"type: " + k.Type}
			if k.Name != "" {
				fields = append(fields, "name: "+k.Name)
			}
			if k.TrustedHops != 0 {
				fields = append(fields, fmt.Sprintf("trusted_hops: %d", k.TrustedHops))
			}
			if k.Envelope != "" {
				fields = append(fields, "envelope: "+k.Envelope)
			}
			fmt.Fprintf(&b, "      - {%s}\n", strings.Join(fields, ", "))
		}
	}
	if u := o.UpstreamHeaders; u != (UpstreamHeaders{}) {
		fmt.Fprintf(&b, "    upstream_headers: {rebound: %s, successor: %s}\n", u.Rebound, u.Successor)
	}
	if h := o.Health; h != nil {
		b.WriteString("    health:\n")
		if h.ActiveInterval > 0 {
			fmt.Fprintf(&b, "      active: {interval: %s, timeout: %s}\n", h.ActiveInterval, h.ActiveTimeout)
		}
		if h.Passive {
			b.WriteString("      passive: {}\n")
		}
	}
	if o.LoadFactor > 0 {
		fmt.Fprintf(&b, "    bounded_load:\n      factor: %v\n", o.LoadFactor)
	}
	if l := o.Load; l != nil {
		admins := make([]string, 0, 1+len(s.Gateways))
		for _, p := range s.envoyAdmins() {
			admins = append(admins, "'127.0.0.1:"+strconv.Itoa(p)+"'")
		}
		fmt.Fprintf(&b, "    load:\n      envoy_admins: [%s]\n      cluster: app\n", strings.Join(admins, ", "))
		if l.Interval > 0 {
			fmt.Fprintf(&b, "      interval: %s\n", l.Interval)
		}
		if l.Factor > 0 {
			fmt.Fprintf(&b, "      factor: %v\n", l.Factor)
		}
	}
	if o.RefreshInterval > 0 {
		fmt.Fprintf(&b, "    session:\n      refresh_interval: %s\n", o.RefreshInterval)
	}
	if o.EnvoySource {
		fmt.Fprintf(&b, "    discovery:\n      interval: 200ms\n      envoy: {admin: '127.0.0.1:%d', cluster: app}\n", s.discoveryAdmin())
		return writeAtomic(s.ConfigPath, []byte(b.String()))
	}
	b.WriteString("    hosts:\n")
	for _, i := range backends {
		be := s.Backends[i]
		fmt.Fprintf(&b, "      - name: %s\n        address: %s\n", be.Name, be.Address())
		if d, ok := s.draining[i]; ok {
			fmt.Fprintf(&b, "        draining_until: %s\n", d.UTC().Format(time.RFC3339Nano))
		}
	}
	return writeAtomic(s.ConfigPath, []byte(b.String()))
}

// Drain marks backend i as draining until deadline in the service's config.
func (s *Stack) Drain(i int, deadline time.Time) error {
	if s.draining == nil {
		s.draining = map[int]time.Time{}
	}
	s.draining[i] = deadline
	return s.WriteConfig(s.hosts...)
}

// DiscoverFrom rewrites the config of a stack with Options.EnvoySource so
// that the pool's hosts come from the Envoy whose admin API is on adminPort
// (a Gateway's) instead of the stack's own.
func (s *Stack) DiscoverFrom(adminPort int) error {
	if !s.opts.EnvoySource {
		return fmt.Errorf("the stack's pool does not take its hosts from Envoy")
	}
	s.envoyAdmin = adminPort
	return s.WriteConfig(s.hosts...)
}

// discoveryAdmin is the admin port of the Envoy the pool's hosts come from.
func (s *Stack) discoveryAdmin() int {
	if s.envoyAdmin != 0 {
		return s.envoyAdmin
	}
	return s.AdminPort
}

// writeAtomic writes and renames, so no reader sees half a file (and
// Envoy's directory watch sees the rename).
func writeAtomic(path string, data []byte) error {
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, data, 0o600); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}
