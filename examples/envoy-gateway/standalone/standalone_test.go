package standalone_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/envoy-affinity/envoy-affinity/internal/envoyversion"
	"github.com/envoy-affinity/envoy-affinity/internal/launch"
	"github.com/envoy-affinity/envoy-affinity/internal/launchtest"
)

// envoyVersion is the pinned Envoy the Makefile installs; Envoy Gateway's
// host infrastructure runs it (EnvoyProxy.spec.provider.host.envoyVersion)
// from where func-e keeps that version, so nothing is downloaded.
const envoyVersion = envoyversion.Tested

var (
	bins launch.Binaries
	// envoyGateway is the envoy-gateway command built from ./eg.
	envoyGateway string
)

func TestMain(m *testing.M) {
	os.Exit(launchtest.Main(m, &bins, func(dir string, _ *launch.Binaries) error {
		envoyGateway = filepath.Join(dir, "envoy-gateway")
		build := exec.Command("go", "build", "-o", envoyGateway, "github.com/envoyproxy/gateway/cmd/envoy-gateway")
		build.Dir = "eg"
		if out, err := build.CombinedOutput(); err != nil {
			return fmt.Errorf("go build envoy-gateway: %v\n%s", err, out)
		}
		return nil
	}))
}

// gateway is Envoy Gateway in standalone mode with the stack's service and
// backends, and the recipe's resources in a folder it watches.
type gateway struct {
	t      *testing.T
	s      *launch.Stack
	proc   *launch.Proc
	res    string // the resources file
	port   int    // the Gateway's listener
	hosts  []int  // backends in Backend web
	policy bool   // the recipe's ClientTrafficPolicy is fed
}

// startGateway starts the stack (no Envoy of its own: Envoy Gateway starts
// one) in opaque mode with the recipe's service configuration, and Envoy
// Gateway with the recipe.
func startGateway(t *testing.T) *gateway {
	t.Helper()
	dir := t.TempDir()
	s, err := launch.StartStack(context.Background(), bins, launch.Options{Dir: dir, Mode: "opaque", NoEnvoy: true,
		// README.md's configuration: the header endpointOverride reads, the
		// cookie the fallback hashes (the pool takes every request: Envoy
		// Gateway sends no cluster name).
		Output: launch.Output{Header: "x-affinity-destination"}})
	if err != nil {
		t.Fatal(err)
	}
	g := &gateway{t: t, s: s, res: filepath.Join(dir, "resources", "recipe.yaml"), hosts: []int{0, 1, 2}, policy: true}
	launchtest.CloseWhenDone(t, s, func() *launch.Proc { return g.proc })
	if g.port, err = launch.FreePort(); err != nil {
		t.Fatal(err)
	}
	for _, d := range []string{"resources", "home", "state", "run", filepath.Join("data", "envoy-versions", envoyVersion, "bin")} {
		if err := os.MkdirAll(filepath.Join(dir, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Symlink(bins.Envoy, filepath.Join(dir, "data", "envoy-versions", envoyVersion, "bin", "envoy")); err != nil {
		t.Fatal(err)
	}
	g.writeResources()
	adminPort, err := launch.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	config := fmt.Sprintf(`apiVersion: gateway.envoyproxy.io/v1alpha1
kind: EnvoyGateway
gateway:
  controllerName: gateway.envoyproxy.io/gatewayclass-controller
provider:
  type: Custom
  custom:
    resource:
      type: File
      file:
        paths: [%[1]q]
    infrastructure:
      type: Host
      host:
        configHome: %[2]q
        dataHome: %[3]q
        stateHome: %[4]q
        runtimeDir: %[5]q
admin:
  address: {host: 127.0.0.1, port: %[6]d}
logging:
  level: {default: warn}
extensionApis:
  enableBackend: true
`, filepath.Join(dir, "resources"), filepath.Join(dir, "home"), filepath.Join(dir, "data"), filepath.Join(dir, "state"), filepath.Join(dir, "run"), adminPort)
	if err := os.WriteFile(filepath.Join(dir, "envoy-gateway.yaml"), []byte(config), 0o600); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command(envoyGateway, "certgen", "--local", "--config-home", filepath.Join(dir, "home")).CombinedOutput(); err != nil {
		t.Fatalf("envoy-gateway certgen: %v\n%s", err, out)
	}
	if g.proc, err = launch.Start("envoy-gateway", dir, filepath.Join(dir, "envoy-gateway.log"), envoyGateway,
		"server", "--config-path", filepath.Join(dir, "envoy-gateway.yaml")); err != nil {
		t.Fatal(err)
	}
	g.waitServing(0, 1, 2)
	return g
}

// url is the Gateway's listener.
func (g *gateway) url() string { return "http://127.0.0.1:" + strconv.Itoa(g.port) }

// waitServing waits until a run of new sessions reaches exactly the given
// backends: Envoy Gateway has translated the resources and its Envoy runs
// them.
func (g *gateway) waitServing(backends ...int) {
	g.t.Helper()
	want := map[string]bool{}
	for _, b := range backends {
		want[g.s.Backends[b].Name] = true
	}
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	if err := launch.Eventually(ctx, 90*time.Second, func() error {
		seen := map[string]bool{}
		for range 30 {
			r, _, err := launch.NewClient(g.url()).Get("/")
			if err != nil {
				return err
			}
			seen[r.Host] = true
		}
		for h := range seen {
			if !want[h] {
				return fmt.Errorf("a new session reached %s, want only %v", h, backends)
			}
		}
		if len(seen) != len(want) {
			return fmt.Errorf("new sessions reached %v, want %v", seen, backends)
		}
		return nil
	}); err != nil {
		g.t.Fatal(err)
	}
}

// recipe reads ../envoy-affinity.yaml as documents.
func recipe(t *testing.T) []map[string]any {
	t.Helper()
	data, err := os.ReadFile(filepath.Join("..", "envoy-affinity.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	dec := yaml.NewDecoder(bytes.NewReader(data))
	var docs []map[string]any
	for {
		var d map[string]any
		if err := dec.Decode(&d); err == io.EOF {
			return docs
		} else if err != nil {
			t.Fatal(err)
		}
		docs = append(docs, d)
	}
}

// asBackend turns a backendRef to a Kubernetes Service into one to the
// Envoy Gateway Backend of the same name: standalone, there are no
// Services nor EndpointSlices, and a Backend lists the local processes.
func asBackend(ref any) {
	r := ref.(map[string]any)
	r["group"], r["kind"] = "gateway.envoyproxy.io", "Backend"
	delete(r, "port")
}

// writeResources writes the recipe, its Service references made Backend
// references, and what a cluster would hold (GatewayClass, Gateway,
// Backends of the running processes, the EnvoyProxy that runs the pinned
// Envoy) into the folder Envoy Gateway watches.
func (g *gateway) writeResources() {
	g.t.Helper()
	var out bytes.Buffer
	for _, d := range recipe(g.t) {
		spec, _ := d["spec"].(map[string]any)
		switch d["kind"] {
		case "HTTPRoute":
			for _, rule := range spec["rules"].([]any) {
				for _, ref := range rule.(map[string]any)["backendRefs"].([]any) {
					asBackend(ref)
				}
			}
		case "EnvoyExtensionPolicy":
			// Envoy Gateway v1.9.1 standalone refuses the policy's
			// reference to another namespace whatever the ReferenceGrant
			// says ("ExtProc: backend ref to Backend
			// envoy-affinity/envoy-affinity not permitted by any
			// ReferenceGrant"), so the service's Backend is in the
			// policy's own namespace here.
			for _, ep := range spec["extProc"].([]any) {
				for _, ref := range ep.(map[string]any)["backendRefs"].([]any) {
					asBackend(ref)
					delete(ref.(map[string]any), "namespace")
				}
			}
		case "ReferenceGrant":
			for _, to := range spec["to"].([]any) {
				to.(map[string]any)["group"], to.(map[string]any)["kind"] = "gateway.envoyproxy.io", "Backend"
			}
		case "BackendTrafficPolicy":
			// Envoy Gateway v1.9.1's file provider panics on a consistent
			// hash ("unsupported type: uint64": the tableSize it defaults,
			// stored through Kubernetes' structured-merge-diff), so the
			// fallback is round robin here; endpointOverride, which the
			// service's decision rides on, is fed as shipped.
			lb := spec["loadBalancer"].(map[string]any)
			if lb["type"] == "ConsistentHash" {
				lb["type"] = "RoundRobin"
				delete(lb, "consistentHash")
			}
		case "ClientTrafficPolicy":
			if !g.policy {
				continue
			}
		}
		data, err := yaml.Marshal(d)
		if err != nil {
			g.t.Fatal(err)
		}
		out.WriteString("---\n")
		out.Write(data)
	}
	var web strings.Builder
	for _, i := range g.hosts {
		fmt.Fprintf(&web, "  - ip: {address: 127.0.0.1, port: %d}\n", g.s.Backends[i].Port)
	}
	fmt.Fprintf(&out, `---
apiVersion: gateway.networking.k8s.io/v1
kind: GatewayClass
metadata: {name: eg}
spec:
  controllerName: gateway.envoyproxy.io/gatewayclass-controller
  parametersRef: {group: gateway.envoyproxy.io, kind: EnvoyProxy, name: host, namespace: shop}
---
apiVersion: gateway.envoyproxy.io/v1alpha1
kind: EnvoyProxy
metadata: {name: host, namespace: shop}
spec:
  provider:
    type: Host
    host: {envoyVersion: %q}
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: eg, namespace: shop}
spec:
  gatewayClassName: eg
  listeners:
  - {name: http, protocol: HTTP, port: %d}
---
apiVersion: gateway.envoyproxy.io/v1alpha1
kind: Backend
metadata: {name: web, namespace: shop}
spec:
  endpoints:
%s---
apiVersion: gateway.envoyproxy.io/v1alpha1
kind: Backend
metadata: {name: envoy-affinity, namespace: shop}
spec:
  endpoints:
  - ip: {address: 127.0.0.1, port: %d}
`, envoyVersion, g.port, web.String(), g.s.GRPCPort)
	// Written whole and renamed, so the watcher never reads half a file.
	tmp := g.res + ".tmp"
	if err := os.WriteFile(tmp, out.Bytes(), 0o600); err != nil {
		g.t.Fatal(err)
	}
	if err := os.Rename(tmp, g.res); err != nil {
		g.t.Fatal(err)
	}
}

// session is one user and the host the service bound it to.
type session struct {
	c     *launch.Client
	host  string
	count int
}

// get sends one request of the session and checks it stayed.
func (g *gateway) get(ss *session, headers ...string) error {
	r, _, err := ss.c.Get("/", headers...)
	if err != nil {
		return err
	}
	ss.count++
	if r.Host != ss.host || r.Count != ss.count {
		return fmt.Errorf("request %d of a session on %s: answered by %s with count %d", ss.count, ss.host, r.Host, r.Count)
	}
	return nil
}

// open starts n sessions; each backend's sessions are listed by name.
func (g *gateway) open(n int) []*session {
	g.t.Helper()
	var out []*session
	for range n {
		c := launch.NewClient(g.url())
		r, _, err := c.Get("/")
		if err != nil {
			g.t.Fatal(err)
		}
		if bound := g.s.CookieHost(c.Cookie("affinity")); bound != r.Host {
			g.t.Fatalf("a new session was served by %s, its cookie names %q", r.Host, bound)
		}
		out = append(out, &session{c: c, host: r.Host, count: 1})
	}
	return out
}

// TestEnvoyGatewayStandalone runs the recipe through Envoy Gateway's own
// translation and the Envoy it starts: sessions stick; neither a client's
// x-affinity-destination nor a forged cookie chooses the host; a host
// removed from the pool and from the Backend moves only its own sessions,
// and a crashed backend's sessions are served elsewhere, with no failed
// request; with the service down, requests still flow and the client's
// header is removed before it can matter (without the recipe's
// ClientTrafficPolicy it would choose the host).
func TestEnvoyGatewayStandalone(t *testing.T) {
	g := startGateway(t)
	sessions := g.open(24)
	per := map[string]int{}
	for _, ss := range sessions {
		per[ss.host]++
	}
	if len(per) != 3 {
		t.Fatalf("sessions per backend %v: want all three used", per)
	}

	// What Envoy Gateway really generated from the recipe, checked by the
	// service's own doctor against the service's configuration: no error;
	// the one warning is the fallback policy, round robin here in place of
	// the recipe's consistent hash (see writeResources).
	t.Run("doctor", func(t *testing.T) {
		admin, err := envoyAdmin(g.proc.Pid())
		if err != nil {
			t.Fatal(err)
		}
		out, err := exec.Command(bins.Server, "doctor", "-json", "-config", g.s.ConfigPath, "-envoy-admin", admin).Output()
		var report struct {
			Problems []struct{ Severity, Check, Where, Problem string }
		}
		if jerr := json.Unmarshal(out, &report); jerr != nil {
			t.Fatalf("doctor: %v, %v: %s", err, jerr, out)
		}
		var got []string
		for _, p := range report.Problems {
			got = append(got, p.Severity+" "+p.Check)
		}
		if want := []string{"warning override_host.fallback_policy"}; !slices.Equal(got, want) {
			t.Fatalf("the doctor on Envoy Gateway's configuration: %v, want %v\n%s", got, want, out)
		}
	})

	t.Run("sticky, the client's header ignored", func(t *testing.T) {
		for _, ss := range sessions {
			for _, b := range g.s.Backends {
				if err := g.get(ss, "x-affinity-destination", b.Address()); err != nil {
					t.Fatal(err)
				}
			}
		}
		// A new session naming a host in the header gets the service's
		// choice, which its cookie names.
		target := g.s.Backends[2]
		landed := 0
		for range 12 {
			c := launch.NewClient(g.url())
			r, _, err := c.Get("/", "x-affinity-destination", target.Address())
			if err != nil {
				t.Fatal(err)
			}
			if bound := g.s.CookieHost(c.Cookie("affinity")); bound != r.Host {
				t.Fatalf("a new session naming %s in the header was served by %s, its cookie names %q", target.Name, r.Host, bound)
			}
			if r.Host == target.Name {
				landed++
			}
		}
		if landed == 12 {
			t.Fatalf("12 new sessions naming %s all landed there", target.Name)
		}
	})

	t.Run("forged cookie", func(t *testing.T) {
		for _, cookie := range []string{"garbage", "eyJhbGciOiJIUzI1NiJ9.eyJzaWQiOiJ4IiwiaCI6ImJhY2tlbmQtMyJ9.AAAA"} {
			c := launch.NewClient(g.url())
			r, resp, err := c.Get("/", "Cookie", "affinity="+cookie)
			if err != nil {
				t.Fatalf("cookie %q: %v", cookie, err)
			}
			if resp.Header.Get("Set-Cookie") == "" || g.s.CookieHost(c.Cookie("affinity")) != r.Host {
				t.Fatalf("cookie %q: served by %s, new cookie for %q", cookie, r.Host, g.s.CookieHost(c.Cookie("affinity")))
			}
		}
	})

	t.Run("host removed", func(t *testing.T) {
		gone := sessions[0].host
		var keep []int
		for i, b := range g.s.Backends {
			if b.Name != gone {
				keep = append(keep, i)
			}
		}
		if err := g.s.WriteConfig(keep...); err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		names := []string{g.s.Backends[keep[0]].Name, g.s.Backends[keep[1]].Name}
		if err := g.s.WaitPoolHosts(ctx, names...); err != nil {
			t.Fatal(err)
		}
		g.hosts = keep
		g.writeResources()
		g.waitServing(keep...)
		for _, ss := range sessions {
			r, _, err := ss.c.Get("/")
			if err != nil {
				t.Fatalf("a session of %s after %s left: %v", ss.host, gone, err)
			}
			switch {
			case ss.host == gone && r.Host == gone:
				t.Fatalf("a session of %s still reached it", gone)
			case ss.host == gone:
				ss.host, ss.count = r.Host, r.Count
			case r.Host != ss.host:
				t.Fatalf("a session of %s moved to %s when %s left", ss.host, r.Host, gone)
			default:
				ss.count++
			}
		}
	})

	t.Run("backend crashed", func(t *testing.T) {
		dead := g.s.Backends[g.hosts[0]]
		dead.Proc.Kill()
		moved := 0
		for _, ss := range sessions {
			r, _, err := ss.c.Get("/")
			if err != nil {
				t.Fatalf("a session of %s after %s died: %v", ss.host, dead.Name, err)
			}
			switch {
			case r.Host == dead.Name:
				t.Fatalf("a request reached the dead %s", dead.Name)
			case ss.host == dead.Name:
				moved++
			case r.Host != ss.host:
				t.Fatalf("a session of %s moved to %s when %s died", ss.host, r.Host, dead.Name)
			}
		}
		if moved == 0 {
			t.Fatalf("no session was on %s", dead.Name)
		}
	})

	t.Run("service down", func(t *testing.T) {
		g.s.Server.Stop()
		target := g.s.Backends[g.hosts[1]]
		landedWith := func() int {
			landed := 0
			for range 12 {
				r, _, err := launch.NewClient(g.url()).Get("/", "x-affinity-destination", target.Address())
				if err != nil {
					t.Fatalf("with the service down: %v", err)
				}
				if r.Host == target.Name {
					landed++
				}
			}
			return landed
		}
		if n := landedWith(); n == 12 {
			t.Fatalf("with the service down, 12 requests naming %s all landed there", target.Name)
		}
		// Without the recipe's ClientTrafficPolicy the header would choose.
		g.policy = false
		g.writeResources()
		ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
		defer cancel()
		if err := launch.Eventually(ctx, 60*time.Second, func() error {
			if n := landedWith(); n != 12 {
				return fmt.Errorf("without the ClientTrafficPolicy %d of 12 requests naming %s landed there", n, target.Name)
			}
			return nil
		}); err != nil {
			t.Fatal(err)
		}
	})
}
