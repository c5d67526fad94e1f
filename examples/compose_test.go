package examples

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"

	bootstrapv3 "github.com/envoyproxy/go-control-plane/envoy/config/bootstrap/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	jwtauthnv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/jwt_authn/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	"google.golang.org/protobuf/types/known/anypb"
	"gopkg.in/yaml.v3"

	"github.com/envoy-affinity/envoy-affinity/internal/envoyversion"
)

// composeFile is docker-compose.yml at the top of the repository.
const composeFile = "../docker-compose.yml"

// composeService is a service of docker-compose.yml (the keys it uses).
type composeService struct {
	Image       string            `yaml:"image"`
	WorkingDir  string            `yaml:"working_dir"`
	Volumes     []string          `yaml:"volumes"`
	Environment map[string]string `yaml:"environment"`
	NetworkMode string            `yaml:"network_mode"`
	Command     any               `yaml:"command"` // a string or a list
	DependsOn   []string          `yaml:"depends_on"`
}

type composeSpec struct {
	XGo      composeService            `yaml:"x-go"`
	Services map[string]composeService `yaml:"services"`
	Volumes  map[string]any            `yaml:"volumes"`
}

func loadCompose(t *testing.T) composeSpec {
	t.Helper()
	data, err := os.ReadFile(composeFile)
	if err != nil {
		t.Fatal(err)
	}
	var c composeSpec
	dec := yaml.NewDecoder(strings.NewReader(string(data)))
	dec.KnownFields(true)
	if err := dec.Decode(&c); err != nil {
		t.Fatalf("%s: %v", composeFile, err)
	}
	return c
}

// args returns a service's command as words.
func (s composeService) args(t *testing.T) []string {
	t.Helper()
	switch c := s.Command.(type) {
	case string:
		return strings.Fields(c)
	case []any:
		out := make([]string, len(c))
		for i, w := range c {
			out[i] = fmt.Sprint(w)
		}
		return out
	}
	t.Fatalf("command %v is neither a string nor a list", s.Command)
	return nil
}

// hostPath maps a path inside the service's container (relative paths from
// its working_dir) to the repository path its bind mount shows there.
func (s composeService) hostPath(t *testing.T, p string) string {
	t.Helper()
	if !path.IsAbs(p) {
		p = path.Join(s.WorkingDir, p)
	}
	for _, v := range s.Volumes {
		parts := strings.Split(v, ":")
		src, dst := parts[0], parts[1]
		if !strings.HasPrefix(src, ".") {
			continue // a named volume
		}
		if rel, ok := strings.CutPrefix(p, dst); ok && (rel == "" || strings.HasPrefix(rel, "/")) {
			return filepath.Join("..", src, filepath.FromSlash(rel))
		}
	}
	t.Fatalf("%s is not inside a bind mount of %v", p, s.Volumes)
	return ""
}

// flagValue returns the value of -name in args.
func flagValue(t *testing.T, args []string, name string) string {
	t.Helper()
	i := slices.Index(args, "-"+name)
	if i < 0 || i+1 >= len(args) {
		t.Fatalf("%q has no -%s", args, name)
	}
	return args[i+1]
}

func exists(t *testing.T, p string, dir bool) {
	t.Helper()
	st, err := os.Stat(p)
	switch {
	case err != nil:
		t.Errorf("%s: %v", p, err)
	case st.IsDir() != dir:
		t.Errorf("%s: directory %v, want %v", p, st.IsDir(), dir)
	}
}

// TestComposeReferences checks that everything docker-compose.yml names
// exists: bind-mount sources, working folders, the packages `go run`
// builds, the service's -config, Envoy's -c file and the files that file
// names; that the commands' flags parse with the programs' own parsers;
// and that named volumes and depends_on entries are defined.
func TestComposeReferences(t *testing.T) {
	c := loadCompose(t)
	if len(c.Services) == 0 {
		t.Fatal("no services")
	}
	for name, s := range c.Services {
		for _, v := range s.Volumes {
			src := strings.Split(v, ":")[0]
			if strings.HasPrefix(src, ".") {
				exists(t, filepath.Join("..", src), true)
			} else if _, ok := c.Volumes[src]; !ok {
				t.Errorf("%s: volume %s is not defined", name, src)
			}
		}
		for _, d := range s.DependsOn {
			if _, ok := c.Services[d]; !ok {
				t.Errorf("%s depends on %s, which is not a service", name, d)
			}
		}
		exists(t, s.hostPath(t, s.WorkingDir), true)
		args := s.args(t)
		switch {
		case len(args) > 2 && args[0] == "go" && args[1] == "run":
			pkg := s.hostPath(t, args[2])
			exists(t, filepath.Join(pkg, "main.go"), false)
			bin := map[string]string{"backend": bins.Backend, "envoy-affinity": bins.Server}[filepath.Base(pkg)]
			if bin == "" {
				t.Errorf("%s runs %s, which the tests do not build", name, args[2])
				continue
			}
			// -h after the flags answers help only if every flag before it
			// is known and its value valid.
			if out, err := exec.Command(bin, append(slices.Clone(args[3:]), "-h")...).CombinedOutput(); err != nil {
				t.Errorf("%s: %q does not parse: %v\n%s", name, args[3:], err, out)
			}
			if slices.Contains(args, "-config") {
				exists(t, s.hostPath(t, flagValue(t, args, "config")), false)
			}
		case len(args) > 0 && args[0] == "envoy":
			cfg := s.hostPath(t, flagValue(t, args, "c"))
			exists(t, cfg, false)
			for _, ref := range envoyFileRefs(t, cfg) {
				exists(t, s.hostPath(t, ref.path), ref.dir)
			}
		default:
			t.Errorf("%s: command %q is neither go run nor envoy", name, args)
		}
	}
}

// fileRef is a file or folder an Envoy YAML names.
type fileRef struct {
	path string
	dir  bool
}

// envoyFileRefs returns the files and folders an Envoy YAML reads:
// path_config_source paths and watched folders, and every filename.
func envoyFileRefs(t *testing.T, file string) []fileRef {
	t.Helper()
	data, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	var tree any
	if err := yaml.Unmarshal(data, &tree); err != nil {
		t.Fatal(err)
	}
	var out []fileRef
	var walk func(v any)
	walk = func(v any) {
		switch v := v.(type) {
		case map[string]any:
			for k, x := range v {
				switch k {
				case "path_config_source":
					m := x.(map[string]any)
					out = append(out, fileRef{path: m["path"].(string)})
					if w, ok := m["watched_directory"].(map[string]any); ok {
						out = append(out, fileRef{path: w["path"].(string), dir: true})
					}
				case "filename":
					out = append(out, fileRef{path: x.(string)})
				}
				walk(x)
			}
		case []any:
			for _, x := range v {
				walk(x)
			}
		}
	}
	walk(tree)
	if len(out) == 0 {
		t.Fatalf("%s names no file; the compose test expects its EDS file", file)
	}
	return out
}

// composeEnvoy is the Envoy YAML docker-compose.yml runs, decoded.
type composeEnvoy struct {
	file      string
	bootstrap *bootstrapv3.Bootstrap
	endpoints *endpointv3.ClusterLoadAssignment // from its EDS file
}

func loadComposeEnvoy(t *testing.T, c composeSpec) composeEnvoy {
	t.Helper()
	s := c.Services["envoy"]
	file := s.hostPath(t, flagValue(t, s.args(t), "c"))
	data, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	e := composeEnvoy{file: file, bootstrap: &bootstrapv3.Bootstrap{}}
	if err := yamlToProto(data, e.bootstrap); err != nil {
		t.Fatalf("%s: %v", file, err)
	}
	refs := envoyFileRefs(t, file)
	eds, err := os.ReadFile(s.hostPath(t, refs[0].path))
	if err != nil {
		t.Fatal(err)
	}
	var disc struct {
		Resources []any `yaml:"resources"`
	}
	if err := yaml.Unmarshal(eds, &disc); err != nil || len(disc.Resources) != 1 {
		t.Fatalf("%s: want one resource: %v", refs[0].path, err)
	}
	var a anypb.Any
	if err := yamlToProto(disc.Resources[0], &a); err != nil {
		t.Fatalf("%s: %v", refs[0].path, err)
	}
	e.endpoints = &endpointv3.ClusterLoadAssignment{}
	if err := a.UnmarshalTo(e.endpoints); err != nil {
		t.Fatal(err)
	}
	return e
}

// staticEndpoint returns the one address of a STATIC cluster.
func (e composeEnvoy) staticEndpoint(t *testing.T, cluster string) string {
	t.Helper()
	for _, c := range e.bootstrap.GetStaticResources().GetClusters() {
		if c.GetName() != cluster {
			continue
		}
		eps := c.GetLoadAssignment().GetEndpoints()
		if len(eps) != 1 || len(eps[0].GetLbEndpoints()) != 1 {
			t.Fatalf("cluster %s: want one endpoint", cluster)
		}
		return sockAddr(eps[0].GetLbEndpoints()[0])
	}
	t.Fatalf("%s has no cluster %s", e.file, cluster)
	return ""
}

func sockAddr(ep *endpointv3.LbEndpoint) string {
	sa := ep.GetEndpoint().GetAddress().GetSocketAddress()
	return net.JoinHostPort(sa.GetAddress(), strconv.Itoa(int(sa.GetPortValue())))
}

// jwtProviderCookies returns the cookies the jwt_authn providers read.
func (e composeEnvoy) jwtProviderCookies(t *testing.T) []string {
	t.Helper()
	var out []string
	for _, l := range e.bootstrap.GetStaticResources().GetListeners() {
		for _, fc := range l.GetFilterChains() {
			for _, f := range fc.GetFilters() {
				var hcm hcmv3.HttpConnectionManager
				if f.GetTypedConfig().UnmarshalTo(&hcm) != nil {
					continue
				}
				for _, hf := range hcm.GetHttpFilters() {
					var jwt jwtauthnv3.JwtAuthentication
					if hf.GetTypedConfig().UnmarshalTo(&jwt) != nil {
						continue
					}
					for _, p := range jwt.GetProviders() {
						out = append(out, p.GetFromCookies()...)
					}
				}
			}
		}
	}
	return out
}

// TestComposePorts checks that the addresses in docker-compose.yml's
// commands, in the Envoy YAML it runs (and its EDS file) and in the
// service's config examples/compose/config.yaml agree: the backends, the
// service's gRPC and admin listeners (where Envoy fetches the JWKS), and
// Envoy's listener, the one the file's header tells to curl.
func TestComposePorts(t *testing.T) {
	c := loadCompose(t)
	e := loadComposeEnvoy(t, c)

	// Backends: compose commands, the EDS file and the service config.
	var fromCompose, fromEDS, fromConfig []string
	names := map[string]string{} // address → name, from compose
	for name, s := range c.Services {
		args := s.args(t)
		if len(args) > 2 && path.Base(args[2]) == "backend" {
			addr := flagValue(t, args, "addr")
			fromCompose = append(fromCompose, addr)
			names[addr] = flagValue(t, args, "name")
			if names[addr] != name {
				t.Errorf("service %s answers as %s", name, names[addr])
			}
		}
	}
	for _, ep := range e.endpoints.GetEndpoints()[0].GetLbEndpoints() {
		addr := sockAddr(ep)
		fromEDS = append(fromEDS, addr)
		if h := ep.GetEndpoint().GetHostname(); h != names[addr] {
			t.Errorf("EDS endpoint %s is named %q, compose runs %q there", addr, h, names[addr])
		}
	}
	s := c.Services["envoy-affinity"]
	args := s.args(t)
	text, err := os.ReadFile(s.hostPath(t, flagValue(t, args, "config")))
	if err != nil {
		t.Fatal(err)
	}
	cfg := parseServiceConfig(t, "examples/compose/config.yaml", string(text))
	for _, p := range cfg.Pools {
		for _, h := range p.Hosts {
			fromConfig = append(fromConfig, h.Address)
			if h.Name != names[h.Address] {
				t.Errorf("config host %s is named %q, compose runs %q there", h.Address, h.Name, names[h.Address])
			}
		}
	}
	for _, l := range [][]string{fromCompose, fromEDS, fromConfig} {
		slices.Sort(l)
	}
	if len(fromCompose) != 3 || !slices.Equal(fromCompose, fromEDS) || !slices.Equal(fromCompose, fromConfig) {
		t.Errorf("backends: compose runs %v, Envoy's EDS file has %v, the service config %v", fromCompose, fromEDS, fromConfig)
	}

	// The service: Envoy's clusters for it, and the JWKS it fetches.
	grpcAddr, adminAddr := flagValue(t, args, "grpc-addr"), flagValue(t, args, "admin-addr")
	if got := e.staticEndpoint(t, "envoy_affinity"); got != grpcAddr {
		t.Errorf("Envoy calls the ext_proc at %s, compose runs it on %s", got, grpcAddr)
	}
	if got := e.staticEndpoint(t, "envoy_affinity_admin"); got != adminAddr {
		t.Errorf("Envoy fetches the JWKS from %s, compose runs the admin listener on %s", got, adminAddr)
	}
	data, err := os.ReadFile(e.file)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(data), "uri: http://"+adminAddr+"/.well-known/jwks.json") {
		t.Errorf("%s: the JWKS uri is not on %s", e.file, adminAddr)
	}

	// The mode and cookie: the service config matches the Envoy file.
	mode := strings.TrimSuffix(filepath.Base(e.file), ".yaml")
	for _, p := range cfg.Pools {
		if p.Mode != mode {
			t.Errorf("pool %s is in mode %s, Envoy runs %s", p.Name, p.Mode, filepath.Base(e.file))
		}
		if cookies := e.jwtProviderCookies(t); !slices.Equal(cookies, []string{p.Cookie.Name}) {
			t.Errorf("pool %s's cookie %s, Envoy's jwt_authn reads %v", p.Name, p.Cookie.Name, cookies)
		}
	}
	if v := s.Environment[cfg.Keys.Env]; cfg.Keys.Env == "" || v == "" {
		t.Errorf("keys.env %q is not in envoy-affinity's environment", cfg.Keys.Env)
	}

	// Envoy's listener: the one the file's header tells to curl.
	compose, err := os.ReadFile(composeFile)
	if err != nil {
		t.Fatal(err)
	}
	listeners := e.bootstrap.GetStaticResources().GetListeners()
	if len(listeners) != 1 {
		t.Fatalf("%d listeners, want 1", len(listeners))
	}
	la := listeners[0].GetAddress().GetSocketAddress()
	listen := net.JoinHostPort(la.GetAddress(), strconv.Itoa(int(la.GetPortValue())))
	if !strings.Contains(string(compose), "http://"+listen+"/") {
		t.Errorf("Envoy listens on %s; docker-compose.yml's header tells to curl another address", listen)
	}

	// Host networking: no two listeners on one address.
	aa := e.bootstrap.GetAdmin().GetAddress().GetSocketAddress()
	all := append(slices.Clone(fromCompose), grpcAddr, adminAddr, listen, net.JoinHostPort(aa.GetAddress(), strconv.Itoa(int(aa.GetPortValue()))))
	if slices.Sort(all); len(slices.Compact(slices.Clone(all))) != len(all) {
		t.Errorf("two listeners share an address: %v", all)
	}
}

// repoPathRE finds repository paths named in comments.
var repoPathRE = regexp.MustCompile(`\b(?:envoy|examples|cmd)/[\w./-]+\.(?:yaml|go)\b`)

// TestComposeVersionsAndPaths checks the images against what the project
// tests with (Envoy: internal/envoyversion; Go: go.mod's release),
// and that every repository file the compose file and its service config
// mention in comments exists.
func TestComposeVersionsAndPaths(t *testing.T) {
	c := loadCompose(t)
	if got, want := c.Services["envoy"].Image, "envoyproxy/envoy:v"+envoyversion.Tested; got != want {
		t.Errorf("Envoy image %s, want %s (internal/envoyversion)", got, want)
	}
	mod, err := os.ReadFile("../go.mod")
	if err != nil {
		t.Fatal(err)
	}
	goVersion := goModGoRE.FindStringSubmatch(string(mod))[1]
	for name, s := range c.Services {
		if strings.HasPrefix(s.Image, "golang:") && s.Image != "golang:"+goVersion {
			t.Errorf("%s: image %s, go.mod asks for Go %s", name, s.Image, goVersion)
		}
	}
	for _, f := range []string{composeFile, "compose/config.yaml"} {
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		for _, p := range repoPathRE.FindAllString(string(data), -1) {
			exists(t, filepath.Join("..", p), false)
		}
	}
}
