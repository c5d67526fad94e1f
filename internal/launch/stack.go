package launch

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/envoy-affinity/envoy-affinity/affinity"
)

// The default ports written in the envoy/ YAML files; a stack maps each to a free one.
const (
	yamlAdminPort       = 9901
	yamlListenerPort    = 10000
	yamlServerPort      = 9002
	yamlServerAdminPort = 9003
	yamlFirstBackend    = 8081
)

// endpointsFile is the EDS file verified.yaml and native.yaml read, relative
// to Envoy's working folder.
const endpointsFile = "app-endpoints.yaml"

// Options shape a stack.
//
// The service's config is the stack's to write: it rewrites the file when
// a test changes the pool's hosts (SetHosts, Drain, DiscoverFrom), so a
// caller shapes it through typed fields only (Mode, Strict, KeySources,
// Output, Health, Store, ...), never through YAML text spliced in or
// replaced in the file; a setting no field covers gets a field here. Envoy
// runs a file the caller names (EnvoyYAML): a shipped file of envoy/, or a
// variant of one the caller wrote (WriteVariant, ApplyChanges) or has
// BeforeEnvoy write from the service's config.
type Options struct {
	// Dir holds the configs and logs; it must exist.
	Dir string
	// Backends is how many demo backends run (3 when 0).
	Backends int
	// BackendIP is the loopback address the backends listen on (127.0.0.1
	// when empty): another one gives addresses of another length.
	BackendIP string
	// BackendIPs, when set, gives backend i its own loopback address (a
	// control plane that keys endpoints by address, as Istio does).
	BackendIPs []string
	// Mode is the pool's mode (verified when empty); Envoy runs
	// envoy/<mode>.yaml unless EnvoyYAML names another file.
	Mode      string
	EnvoyYAML string
	// KeyAlg is the signing key's algorithm: ed25519 (default) or hs256.
	KeyAlg string
	// RefreshInterval is the pool's session.refresh_interval (default when 0).
	RefreshInterval time.Duration
	// SignDelay is keys.sign_delay (0 when unset).
	SignDelay time.Duration
	// Strict is the pool's strict option.
	Strict bool
	// Failback is the pool's failback option.
	Failback bool
	// LoadFactor turns on bounded loads with this factor (0: off).
	LoadFactor float64
	// Load is the pool's load block, reading every Envoy of the stack (left
	// out when nil).
	Load *Load
	// EnvoySource takes the pool's hosts from Envoy's admin API instead of
	// the config file.
	EnvoySource bool
	// PoolName names the pool (left out when empty: it takes every cluster).
	PoolName string
	// KeySources are the pool's key_sources (left out when empty).
	KeySources []KeySource
	// Output is the pool's output block (left out when zero).
	Output Output
	// UpstreamHeaders is the pool's upstream_headers block (left out
	// when zero; both headers are named when it is not).
	UpstreamHeaders UpstreamHeaders
	// Health is the pool's health block (left out when nil).
	Health *Health
	// Store is the store block, a shared Redis (none when nil).
	Store *RedisStore
	// ServerArgs are extra flags for envoy-affinity.
	ServerArgs []string
	// BackendArgs are extra flags for each backend.
	BackendArgs []string
	// Replicas is how many envoy-affinity processes run with the same
	// config and keys (1 when 0). Replica i listens on the ports an Envoy
	// YAML writes as 9002+10i (gRPC) and 9003+10i (admin).
	Replicas int
	// Later is how many of the last replicas are not started with the
	// stack: StartReplica starts them (Envoy's health check finds them).
	Later int
	// AdminCA, when set, is the PEM CA the service's admin certificate
	// chains to (ServerArgs carry -admin-tls-cert and -admin-tls-key):
	// the stack then reaches the admin listener over TLS, by AdminServerName.
	AdminCA         []byte
	AdminServerName string
	// NoEnvoy starts no Envoy: a control plane the test runs starts its
	// own (Envoy Gateway's host infrastructure).
	NoEnvoy bool
	// Envoys is how many Envoys run the stack's YAML (1 when 0): the
	// others are Gateways, started with the stack on ports of their own,
	// and a load block reads every one of them from the start.
	Envoys int
	// BeforeEnvoy runs once the server is up, before EnvoyYAML is read
	// and Envoy starts: it may write files into Dir, or EnvoyYAML itself.
	BeforeEnvoy func(*Stack) error
}

// Backend is one demo backend process.
type Backend struct {
	Name string
	IP   string
	Port int
	Proc *Proc
}

// Address is the backend's ip:port.
func (b *Backend) Address() string { return b.IP + ":" + strconv.Itoa(b.Port) }

// Replica is one envoy-affinity process of a stack and its ports.
type Replica struct {
	Proc      *Proc
	GRPCPort  int
	AdminPort int
}

// Stack is Envoy, envoy-affinity and demo backends running together.
type Stack struct {
	opts       Options
	bins       Binaries
	Backends   []*Backend
	Server     *Proc
	Envoy      *Proc
	ListenPort int
	AdminPort  int
	GRPCPort   int
	ServerPort int // the server's admin port
	// Replicas are the envoy-affinity processes, Replicas[0] is Server.
	Replicas   []*Replica
	ConfigPath string
	KeysPath   string
	// Gateways are Envoys added with AddEnvoy (or Options.Envoys),
	// beside Envoy.
	Gateways []*Gateway
	// reserved are the ports of the Gateways Options.Envoys asks for,
	// drawn before the service's config is written (it names their admin
	// APIs) and taken by AddEnvoy in order.
	reserved  []gatewayPorts
	envoyYAML []byte
	started   int
	envoyDir  string
	portMap   map[int]int
	hosts     []int             // backends in the service's pool
	draining  map[int]time.Time // backend index → drain deadline
	// envoyAdmin is the admin port of the Envoy the pool's hosts come
	// from, when not the stack's own (DiscoverFrom).
	envoyAdmin int
}

// StartStack starts the backends, the server (with every backend in its
// pool) and Envoy, and waits until each is ready. On error everything that
// started is stopped again.
func StartStack(ctx context.Context, bins Binaries, opts Options) (_ *Stack, err error) {
	if opts.Backends == 0 {
		opts.Backends = 3
	}
	if opts.Mode == "" {
		opts.Mode = "verified"
	}
	if opts.KeyAlg == "" {
		opts.KeyAlg = "ed25519"
	}
	if opts.BackendIP == "" {
		opts.BackendIP = "127.0.0.1"
	}
	if opts.Replicas == 0 {
		opts.Replicas = 1
	}
	root, err := ModuleRoot()
	if err != nil {
		return nil, err
	}
	s := &Stack{opts: opts, bins: bins, envoyDir: filepath.Join(root, "envoy")}
	if opts.EnvoyYAML == "" {
		s.opts.EnvoyYAML = filepath.Join(s.envoyDir, opts.Mode+".yaml")
	}
	defer func() {
		if err != nil {
			s.Close()
		}
	}()
	ports := make([]int, 4+opts.Backends)
	for i := range ports {
		if ports[i], err = FreePort(); err != nil {
			return nil, err
		}
	}
	s.ListenPort, s.AdminPort, s.GRPCPort, s.ServerPort = ports[0], ports[1], ports[2], ports[3]
	s.Replicas = []*Replica{{GRPCPort: s.GRPCPort, AdminPort: s.ServerPort}}
	for range opts.Replicas - 1 {
		r := &Replica{}
		if r.GRPCPort, err = FreePort(); err != nil {
			return nil, err
		}
		if r.AdminPort, err = FreePort(); err != nil {
			return nil, err
		}
		s.Replicas = append(s.Replicas, r)
	}
	for range opts.Envoys - 1 {
		var g gatewayPorts
		if g.listen, err = FreePort(); err != nil {
			return nil, err
		}
		if g.admin, err = FreePort(); err != nil {
			return nil, err
		}
		s.reserved = append(s.reserved, g)
	}
	for i := 0; i < opts.Backends; i++ {
		b := &Backend{Name: "backend-" + strconv.Itoa(i+1), IP: opts.BackendIP, Port: ports[4+i]}
		if i < len(opts.BackendIPs) {
			b.IP = opts.BackendIPs[i]
		}
		s.Backends = append(s.Backends, b)
		if err := s.StartBackend(ctx, i); err != nil {
			return nil, err
		}
	}

	s.KeysPath = filepath.Join(opts.Dir, "keys.txt")
	if err := os.WriteFile(s.KeysPath, []byte(NewKeyLine("k1", opts.KeyAlg)+"\n"), 0o600); err != nil {
		return nil, err
	}
	s.ConfigPath = filepath.Join(opts.Dir, "config.yaml")
	all := make([]int, opts.Backends)
	for i := range all {
		all[i] = i
	}
	if err := s.WriteConfig(all...); err != nil {
		return nil, err
	}
	for i := range len(s.Replicas) - opts.Later {
		if err := s.StartReplica(ctx, i); err != nil {
			return nil, err
		}
	}

	if opts.NoEnvoy {
		return s, nil
	}
	// The hook may write the Envoy YAML itself, from the stack's config.
	if opts.BeforeEnvoy != nil {
		if err := opts.BeforeEnvoy(s); err != nil {
			return nil, err
		}
	}
	yaml, err := os.ReadFile(s.opts.EnvoyYAML)
	if err != nil {
		return nil, err
	}
	s.portMap = map[int]int{yamlAdminPort: s.AdminPort, yamlListenerPort: s.ListenPort, yamlServerPort: s.GRPCPort, yamlServerAdminPort: s.ServerPort}
	for i, b := range s.Backends {
		s.portMap[yamlFirstBackend+i] = b.Port
	}
	for i, r := range s.Replicas[1:] {
		s.portMap[yamlServerPort+10*(i+1)] = r.GRPCPort
		s.portMap[yamlServerAdminPort+10*(i+1)] = r.AdminPort
	}
	s.envoyYAML = yaml
	rendered, err := RenderEnvoy(yaml, s.portMap)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", s.opts.EnvoyYAML, err)
	}
	envoyConfig := filepath.Join(opts.Dir, "envoy.yaml")
	if err := os.WriteFile(envoyConfig, rendered, 0o600); err != nil {
		return nil, err
	}
	if strings.Contains(string(yaml), endpointsFile) {
		if err := s.WriteEndpoints(all...); err != nil {
			return nil, err
		}
	}
	s.Envoy, err = Start("envoy", opts.Dir, filepath.Join(opts.Dir, "envoy.log"), bins.Envoy,
		"-c", envoyConfig, "--disable-hot-restart", "--concurrency", "1", "-l", "warn")
	if err != nil {
		return nil, err
	}
	if err := waitReady(ctx, s.Envoy, s.adminURL("/ready"), "LIVE"); err != nil {
		return nil, err
	}
	for len(s.reserved) > 0 {
		if _, err := s.AddEnvoy(ctx); err != nil {
			return nil, err
		}
	}
	if opts.EnvoySource {
		if err := Eventually(ctx, 10*time.Second, func() error {
			ids, err := s.PoolHosts()
			if err == nil && len(ids) != len(s.Backends) {
				err = fmt.Errorf("the service knows %d hosts from Envoy, want %d", len(ids), len(s.Backends))
			}
			return err
		}); err != nil {
			return nil, err
		}
	}
	return s, nil
}

// NewKeyLine returns a fresh "id:alg:secret" line for a keys file.
func NewKeyLine(id, alg string) string {
	b := make([]byte, 32)
	_, _ = rand.Read(b)
	return id + ":" + alg + ":" + base64.RawURLEncoding.EncodeToString(b)
}

// StartBackend (re)starts backend i on its port.
func (s *Stack) StartBackend(ctx context.Context, i int) error {
	b := s.Backends[i]
	p, err := Start(b.Name, "", filepath.Join(s.opts.Dir, b.Name+".log"), s.bins.Backend,
		append([]string{"-addr", b.Address(), "-name", b.Name}, s.opts.BackendArgs...)...)
	if err != nil {
		return err
	}
	b.Proc = p
	return waitReady(ctx, p, "http://"+b.Address()+"/", b.Name)
}

// WriteEndpoints gives Envoy's cluster "app" the listed backends (by index),
// through envoy/app-endpoints.yaml with the other backends' lines left out.
// A backend the file has no line for (the fourth and later) gets one like
// the first backend's, with its own name and port.
func (s *Stack) WriteEndpoints(backends ...int) error {
	tmpl, err := os.ReadFile(filepath.Join(s.envoyDir, endpointsFile))
	if err != nil {
		return err
	}
	keep := map[int]bool{}
	for _, i := range backends {
		keep[yamlFirstBackend+i] = true
	}
	var out []string
	model, at := "", -1 // the first endpoint line, and where the lines after the last one start
	listed := map[int]bool{}
	for _, line := range strings.Split(string(tmpl), "\n") {
		if m := portValueRE.FindStringSubmatch(line); m != nil && strings.Contains(line, "- endpoint:") {
			n, _ := strconv.Atoi(m[1])
			if model == "" {
				model = line
			}
			listed[n] = true
			at = len(out)
			if !keep[n] {
				continue
			}
			line = strings.Replace(line, "address: 127.0.0.1,", "address: "+s.opts.BackendIP+",", 1)
			at++
		}
		out = append(out, line)
	}
	var extra []string
	for _, i := range backends {
		port := yamlFirstBackend + i
		if listed[port] || model == "" {
			continue
		}
		line := strings.Replace(model, "hostname: backend-1,", "hostname: "+s.Backends[i].Name+",", 1)
		line = portValueRE.ReplaceAllString(line, "port_value: "+strconv.Itoa(port))
		extra = append(extra, strings.Replace(line, "address: 127.0.0.1,", "address: "+s.opts.BackendIP+",", 1))
	}
	if len(extra) > 0 {
		if at < 0 {
			return fmt.Errorf("%s: no endpoint line to add backends after", endpointsFile)
		}
		out = slices.Insert(out, at, extra...)
	}
	rendered, err := RenderEnvoy([]byte(strings.Join(out, "\n")), s.portMap)
	if err != nil {
		return err
	}
	return writeAtomic(filepath.Join(s.opts.Dir, endpointsFile), rendered)
}

// StartServer (re)starts envoy-affinity (the first replica) and waits until
// it is ready.
func (s *Stack) StartServer(ctx context.Context) error { return s.StartReplica(ctx, 0) }

// StartReplica (re)starts replica i of envoy-affinity and waits until it is
// ready.
func (s *Stack) StartReplica(ctx context.Context, i int) error {
	s.started++
	r := s.Replicas[i]
	ready, want := "/readyz", "ready"
	if s.opts.EnvoySource {
		// The hosts come from Envoy, which may not run yet.
		ready, want = "/healthz", "ok"
	}
	args := append([]string{
		"-config", s.ConfigPath,
		"-grpc-addr", "127.0.0.1:" + strconv.Itoa(r.GRPCPort),
		"-admin-addr", "127.0.0.1:" + strconv.Itoa(r.AdminPort),
		"-reload-interval", "100ms",
	}, s.opts.ServerArgs...)
	p, err := Start("envoy-affinity", "", filepath.Join(s.opts.Dir, fmt.Sprintf("envoy-affinity.%d.log", s.started)), s.bins.Server, args...)
	if err != nil {
		return err
	}
	r.Proc = p
	if i == 0 {
		s.Server = p
	}
	return waitReadyWith(ctx, s.AdminClient(), p, s.adminScheme()+"://127.0.0.1:"+strconv.Itoa(r.AdminPort)+ready, want)
}

// AdminClient is an HTTP client for the service's admin listener (one that
// trusts Options.AdminCA when it is set).
func (s *Stack) AdminClient() *http.Client {
	c := &http.Client{Timeout: 5 * time.Second}
	if s.opts.AdminCA != nil {
		roots := x509.NewCertPool()
		roots.AppendCertsFromPEM(s.opts.AdminCA)
		c.Transport = &http.Transport{TLSClientConfig: &tls.Config{RootCAs: roots, ServerName: s.opts.AdminServerName}}
	}
	return c
}

func (s *Stack) adminScheme() string {
	if s.opts.AdminCA != nil {
		return "https"
	}
	return "http"
}

// URL is the address clients send requests to (Envoy's listener) plus path.
func (s *Stack) URL(path string) string {
	return "http://127.0.0.1:" + strconv.Itoa(s.ListenPort) + path
}

// ServerURL is a URL on envoy-affinity's admin listener (https with
// Options.AdminCA: fetch it with AdminClient).
func (s *Stack) ServerURL(path string) string {
	return s.adminScheme() + "://127.0.0.1:" + strconv.Itoa(s.ServerPort) + path
}

func (s *Stack) adminURL(path string) string {
	return "http://127.0.0.1:" + strconv.Itoa(s.AdminPort) + path
}

// PoolHosts returns the host IDs of the server's first pool, as it reports
// them, each followed by "(draining)" when it is.
func (s *Stack) PoolHosts() ([]string, error) { return s.poolHostsAt(s.ServerPort) }

func (s *Stack) poolHostsAt(adminPort int) ([]string, error) {
	resp, err := http.Get("http://127.0.0.1:" + strconv.Itoa(adminPort) + "/debug/pools")
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	var out struct {
		Pools []struct {
			Hosts []struct {
				ID    string `json:"id"`
				State string `json:"state"`
			} `json:"hosts"`
		} `json:"pools"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&out); err != nil {
		return nil, err
	}
	if len(out.Pools) == 0 {
		return nil, errors.New("no pools")
	}
	var ids []string
	for _, h := range out.Pools[0].Hosts {
		if h.State == "draining" {
			h.ID += "(draining)"
		}
		ids = append(ids, h.ID)
	}
	return ids, nil
}

// WaitPoolHosts waits until every running replica's pool holds exactly the
// named hosts (in any order).
func (s *Stack) WaitPoolHosts(ctx context.Context, names ...string) error {
	want := strings.Join(slices.Sorted(slices.Values(names)), ",")
	return Eventually(ctx, 10*time.Second, func() error {
		for _, r := range s.Replicas {
			if r.Proc == nil {
				continue
			}
			select {
			case <-r.Proc.Done():
				continue
			default:
			}
			ids, err := s.poolHostsAt(r.AdminPort)
			if err != nil {
				return err
			}
			slices.Sort(ids)
			if got := strings.Join(ids, ","); got != want {
				return fmt.Errorf("replica on %d: pool hosts %s, want %s", r.AdminPort, got, want)
			}
		}
		return nil
	})
}

// WaitEnvoyHosts waits until Envoy's cluster "app" has n hosts.
func (s *Stack) WaitEnvoyHosts(ctx context.Context, n int) error {
	return Eventually(ctx, 10*time.Second, func() error {
		got, err := s.EnvoyStat("cluster.app.membership_total")
		if err == nil && got != n {
			err = fmt.Errorf("cluster app has %d hosts, want %d", got, n)
		}
		return err
	})
}

// Dir is the folder of the stack's configs and logs (Envoy's working folder).
func (s *Stack) Dir() string { return s.opts.Dir }

// ServerBinary is the envoy-affinity binary the stack runs.
func (s *Stack) ServerBinary() string { return s.bins.Server }

// Mode is the stack's pool mode.
func (s *Stack) Mode() string { return s.opts.Mode }

// SetHosts puts the listed backends (by index) in the service's pool and in
// Envoy's cluster (app-endpoints.yaml), and waits until both have them.
func (s *Stack) SetHosts(ctx context.Context, backends ...int) error {
	names := make([]string, len(backends))
	for i, b := range backends {
		names[i] = s.Backends[b].Name
	}
	if err := s.WriteConfig(backends...); err != nil {
		return err
	}
	if err := s.WaitPoolHosts(ctx, names...); err != nil {
		return err
	}
	if err := s.WriteEndpoints(backends...); err != nil {
		return err
	}
	return s.WaitEnvoyHosts(ctx, len(backends))
}

// EnvoyStat reads one counter or gauge from Envoy's admin API.
func (s *Stack) EnvoyStat(name string) (int, error) { return envoyStat(s.AdminPort, name) }

// Stat reads one counter or gauge from this Envoy's admin API.
func (g *Gateway) Stat(name string) (int, error) { return envoyStat(g.AdminPort, name) }

func envoyStat(adminPort int, name string) (int, error) {
	resp, err := http.Get("http://127.0.0.1:" + strconv.Itoa(adminPort) + "/stats?filter=^" + strings.ReplaceAll(name, ".", `\.`) + "$")
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	for _, line := range strings.Split(string(body), "\n") {
		if k, v, ok := strings.Cut(line, ": "); ok && k == name {
			return strconv.Atoi(strings.TrimSpace(v))
		}
	}
	return 0, nil
}

// Gateway is one more Envoy running the stack's YAML on its own listener
// and admin ports, as a second replica of a gateway.
type Gateway struct {
	Proc *Proc
	// Config is its rendered YAML.
	Config     string
	ListenPort int
	AdminPort  int
}

// URL is the address clients send requests to through this Envoy.
func (g *Gateway) URL(path string) string {
	return "http://127.0.0.1:" + strconv.Itoa(g.ListenPort) + path
}

// AddEnvoy starts another Envoy with the stack's YAML (same clusters,
// service replicas and endpoints file) and waits until it is ready.
func (s *Stack) AddEnvoy(ctx context.Context) (*Gateway, error) {
	return s.AddEnvoyWith(ctx, s.envoyYAML)
}

// gatewayPorts are a Gateway's listener and admin ports.
type gatewayPorts struct{ listen, admin int }

// AddEnvoyWith starts another Envoy with the given YAML, its ports written
// as in envoy/ (the stack's service replicas, backends and endpoints file),
// and waits until it is ready. A load block reads it too from then on.
func (s *Stack) AddEnvoyWith(ctx context.Context, yaml []byte) (*Gateway, error) {
	g := &Gateway{}
	if len(s.reserved) > 0 {
		g.ListenPort, g.AdminPort = s.reserved[0].listen, s.reserved[0].admin
		s.reserved = s.reserved[1:]
	} else {
		var err error
		if g.ListenPort, err = FreePort(); err != nil {
			return nil, err
		}
		if g.AdminPort, err = FreePort(); err != nil {
			return nil, err
		}
	}
	ports := maps.Clone(s.portMap)
	ports[yamlListenerPort], ports[yamlAdminPort] = g.ListenPort, g.AdminPort
	rendered, err := RenderEnvoy(yaml, ports)
	if err != nil {
		return nil, err
	}
	n := strconv.Itoa(len(s.Gateways) + 2)
	config := filepath.Join(s.opts.Dir, "envoy-"+n+".yaml")
	if err := os.WriteFile(config, rendered, 0o600); err != nil {
		return nil, err
	}
	// Its own base id, so two Envoys may run on one machine.
	g.Proc, err = Start("envoy-"+n, s.opts.Dir, filepath.Join(s.opts.Dir, "envoy-"+n+".log"), s.bins.Envoy,
		"-c", config, "--disable-hot-restart", "--concurrency", "1", "-l", "warn", "--base-id", n)
	if err != nil {
		return nil, err
	}
	g.Config = config
	s.Gateways = append(s.Gateways, g)
	if err := waitReady(ctx, g.Proc, "http://127.0.0.1:"+strconv.Itoa(g.AdminPort)+"/ready", "LIVE"); err != nil {
		return g, err
	}
	if s.opts.Load != nil {
		// The load block names every Envoy in front of the pool.
		return g, s.WriteConfig(s.hosts...)
	}
	return g, nil
}

// envoyAdmins are the admin ports of every Envoy of the stack, running or
// reserved: the stack's own first.
func (s *Stack) envoyAdmins() []int {
	out := []int{s.AdminPort}
	for _, g := range s.Gateways {
		out = append(out, g.AdminPort)
	}
	for _, g := range s.reserved {
		out = append(out, g.admin)
	}
	return out
}

// Close stops Envoy, the server and the backends.
func (s *Stack) Close() {
	for _, g := range s.Gateways {
		g.Proc.Stop()
	}
	if s.Envoy != nil {
		s.Envoy.Stop()
	}
	for _, r := range s.Replicas {
		if r.Proc != nil {
			r.Proc.Stop()
		}
	}
	for _, b := range s.Backends {
		if b.Proc != nil {
			b.Proc.Stop()
		}
	}
}

// CookieHost names the backend a session cookie binds to, as each mode
// writes it: the host id in claim h (opaque), the first ip:port of claim h
// (verified), or the address inside Envoy's own cookie (native). "" when the
// cookie names no backend of the stack.
func (s *Stack) CookieHost(cookie string) string {
	var addr string
	switch s.opts.Mode {
	case "opaque":
		return TokenClaim(cookie, affinity.HostClaim)
	case "verified":
		addr, _, _ = strings.Cut(TokenClaim(cookie, affinity.HostClaim), ",")
	case "native":
		// Envoy's cookie is base64 of a small proto holding "ip:port".
		raw, err := base64.StdEncoding.DecodeString(cookie)
		if err != nil {
			raw, _ = base64.RawStdEncoding.DecodeString(cookie)
		}
		for _, b := range s.Backends {
			if strings.Contains(string(raw), b.Address()) {
				return b.Name
			}
		}
	}
	for _, b := range s.Backends {
		if b.Address() == addr {
			return b.Name
		}
	}
	return ""
}

// WaitJWKS waits until every Envoy of the stack (listener stat prefix
// ingress) has fetched the service's keys, so that verified tokens are
// the Envoys' alone from then on.
func (s *Stack) WaitJWKS(ctx context.Context) error {
	for _, admin := range s.envoyAdmins() {
		if err := Eventually(ctx, 10*time.Second, func() error {
			if n, err := envoyStat(admin, "http.ingress.jwt_authn.jwks_fetch_success"); err != nil || n == 0 {
				return fmt.Errorf("the Envoy with admin port %d has not fetched the service's keys: %d, %v", admin, n, err)
			}
			return nil
		}); err != nil {
			return err
		}
	}
	return nil
}
