package pilot_test

import (
	"context"
	"encoding/base64"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"istio.io/istio/pilot/pkg/model"

	"github.com/envoy-affinity/envoy-affinity/internal/launch"
	"github.com/envoy-affinity/envoy-affinity/internal/launchtest"
)

var bins launch.Binaries

func TestMain(m *testing.M) { os.Exit(launchtest.Main(m, &bins, nil)) }

// webCluster is Istio's name for web's port 80, the pool's name.
const webCluster = "outbound|80||web.shop.svc.cluster.local"

// variant is one of the recipe's two ways.
type variant struct {
	name, file string
	// output is the pool's output configuration (README.md).
	output launch.Output
	// ownService: the file has web's Service itself (with the label).
	ownService bool
}

var (
	sessionHeader = variant{"session-header", "istio/session-header.yaml", launch.Output{StatefulSessionHeader: "x-affinity-host"}, true}
	overrideHost  = variant{"override-host", "istio/override-host.yaml", launch.Output{}, false}
)

// proxyRun is the service and backends, and the real Envoy running what
// istiod generated for the ingress gateway or for a caller's sidecar.
type proxyRun struct {
	t                          *testing.T
	v                          variant
	s                          *launch.Stack
	envoy                      *launch.Proc
	dir                        string
	port, adminPort            int
	sidecar, persistentSession bool
	dropped                    []string
	g                          generated
}

// runProxy starts the service and three backends, has istiod generate the
// configuration of the ingress gateway, or of the sidecar of a caller of web
// (app: checkout), and runs it (generate).
func runProxy(t *testing.T, v variant, persistentSession, sidecar bool) *proxyRun {
	t.Helper()
	dir := t.TempDir()
	s, err := launch.StartStack(context.Background(), bins, launch.Options{Dir: dir, Mode: "opaque", NoEnvoy: true,
		PoolName: webCluster, Output: v.output,
		// A pod of its own address each: Istio keys endpoints by address.
		BackendIPs: []string{"127.0.0.11", "127.0.0.12", "127.0.0.13"}})
	if err != nil {
		t.Fatal(err)
	}
	r := &proxyRun{t: t, v: v, s: s, dir: dir, sidecar: sidecar, persistentSession: persistentSession}
	launchtest.CloseWhenDone(t, s, func() *launch.Proc { return r.envoy })
	if r.port, err = launch.FreePort(); err != nil {
		t.Fatal(err)
	}
	if r.adminPort, err = launch.FreePort(); err != nil {
		t.Fatal(err)
	}
	r.generate(0, 1, 2)
	return r
}

// generate has istiod generate the proxy's configuration from the
// variant's files, the Services of ../kubernetes with the given backends as
// web's pods, a Gateway and a VirtualService to web, and (re)starts Envoy
// on its listener (the gateway's, or the sidecar's outbound listener of
// web's port 80), on loopback.
func (r *proxyRun) generate(backends ...int) {
	t := r.t
	t.Helper()
	m := &mesh{}
	m.addFile(t, r.v.file)
	if !r.v.ownService {
		m.addFile(t, "kubernetes/web.yaml", "Service/web")
	}
	m.addFile(t, "kubernetes/envoy-affinity.yaml", "Service")
	var pods []launch.Backend
	for _, i := range backends {
		pods = append(pods, *r.s.Backends[i])
	}
	m.addEndpoints(t, "shop", "web", "http", pods...)
	m.addEndpoints(t, "envoy-affinity", "envoy-affinity", "grpc", launch.Backend{IP: "127.0.0.1", Port: r.s.GRPCPort})
	m.add(t, map[string]any{"apiVersion": "networking.istio.io/v1", "kind": "Gateway",
		"metadata": map[string]any{"name": "ingress", "namespace": "istio-system"},
		"spec": map[string]any{"selector": map[string]any{"istio": "ingressgateway"},
			"servers": []any{map[string]any{"port": map[string]any{"number": r.port, "name": "http", "protocol": "HTTP"}, "hosts": []any{"*"}}}}})
	m.add(t, map[string]any{"apiVersion": "networking.istio.io/v1", "kind": "VirtualService",
		"metadata": map[string]any{"name": "web", "namespace": "istio-system"},
		"spec": map[string]any{"hosts": []any{"*"}, "gateways": []any{"ingress"},
			"http": []any{map[string]any{"route": []any{map[string]any{"destination": map[string]any{"host": "web.shop.svc.cluster.local", "port": map[string]any{"number": 80}}}}}}}})

	proxy, listener := &model.Proxy{Type: model.Router, ConfigNamespace: "istio-system",
		Labels: map[string]string{"istio": "ingressgateway"}, IPAddresses: []string{"10.1.0.1"}}, "0.0.0.0_"+strconv.Itoa(r.port)
	if r.sidecar {
		proxy, listener = &model.Proxy{Type: model.SidecarProxy, ConfigNamespace: "shop",
			Labels: map[string]string{"app": "checkout"}, IPAddresses: []string{"10.1.0.2"}}, "0.0.0.0_80"
	}
	r.g = istiod(t, m, proxy, r.persistentSession)
	var config []byte
	config, r.dropped = bootstrap(t, r.g, listener, r.port, r.adminPort)
	path := filepath.Join(r.dir, "istio-proxy.json")
	if err := os.WriteFile(path, config, 0o600); err != nil {
		t.Fatal(err)
	}
	if r.envoy != nil {
		// A new configuration for a static bootstrap is a new Envoy.
		r.envoy.Stop()
	}
	var err error
	if r.envoy, err = launch.Start("envoy", r.dir, filepath.Join(r.dir, "envoy.log"), bins.Envoy,
		"-c", path, "--disable-hot-restart", "--concurrency", "1", "-l", "warn"); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := launch.Eventually(ctx, 30*time.Second, func() error {
		resp, err := http.Get("http://127.0.0.1:" + strconv.Itoa(r.adminPort) + "/ready")
		if err != nil {
			return err
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if strings.TrimSpace(string(body)) != "LIVE" {
			return fmt.Errorf("envoy: %s", body)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
}

// client is a new user: of the gateway's listener, or a workload whose
// requests to web go through its sidecar's listener.
func (r *proxyRun) client() *launch.Client {
	if r.sidecar {
		return launch.NewClientVia("http://web.shop.svc.cluster.local", "127.0.0.1:"+strconv.Itoa(r.port))
	}
	return launch.NewClient("http://127.0.0.1:" + strconv.Itoa(r.port))
}

// hasExtProc tells whether the gateway's listener has the ext_proc filter.
func (r *proxyRun) hasExtProc() bool {
	for _, l := range r.g.listeners {
		if strings.Contains(l.String(), "envoy.filters.http.ext_proc") {
			return true
		}
	}
	return false
}

type session struct {
	c     *launch.Client
	host  string
	count int
}

// TestIstioGateway runs each variant of the recipe through istiod's own
// configuration generation for the ingress gateway and the real Envoy:
// sessions stick, neither a forged cookie nor (session-header) a forged
// header chooses the pod, and a crashed pod's sessions are served
// elsewhere with no failed request. Variant (a) needs
// PILOT_ENABLE_PERSISTENT_SESSION_FILTER: without it istiod generates no
// stateful_session filter, the recipe's ext_proc has nothing to go before,
// and no session is kept.
func TestIstioGateway(t *testing.T) { testIstio(t, false) }

// TestIstioSidecar is TestIstioGateway for the sidecar of a caller of web
// (SIDECAR_OUTBOUND, the listener of web's port 80).
func TestIstioSidecar(t *testing.T) { testIstio(t, true) }

func testIstio(t *testing.T, sidecar bool) {
	for _, v := range []variant{overrideHost, sessionHeader} {
		t.Run(v.name, func(t *testing.T) {
			r := runProxy(t, v, true, sidecar)
			t.Logf("left out of the generated listener, Istio's own proxy extensions: %v", r.dropped)
			if !r.hasExtProc() {
				t.Fatal("istiod did not insert the recipe's ext_proc filter")
			}
			var sessions []*session
			per := map[string]int{}
			for range 24 {
				c := r.client()
				rep, _, err := c.Get("/")
				if err != nil {
					t.Fatal(err)
				}
				if bound := r.s.CookieHost(c.Cookie("affinity")); bound != rep.Host {
					t.Fatalf("a new session was served by %s, its cookie names %q", rep.Host, bound)
				}
				sessions = append(sessions, &session{c: c, host: rep.Host, count: 1})
				per[rep.Host]++
			}
			if len(per) != 3 {
				t.Fatalf("sessions per backend %v, want all three", per)
			}
			for _, ss := range sessions {
				for _, b := range r.s.Backends {
					// A client's copy of the header the session-header
					// variant routes by, naming each backend in turn.
					forged := base64.StdEncoding.EncodeToString([]byte(b.Address()))
					rep, _, err := ss.c.Get("/", "x-affinity-host", forged)
					if err != nil {
						t.Fatal(err)
					}
					ss.count++
					if rep.Host != ss.host || rep.Count != ss.count {
						t.Fatalf("request %d of a session on %s (the client naming %s): answered by %s, count %d", ss.count, ss.host, b.Name, rep.Host, rep.Count)
					}
				}
			}
			c := r.client()
			rep, resp, err := c.Get("/", "Cookie", "affinity=garbage")
			if err != nil || resp.Header.Get("Set-Cookie") == "" || r.s.CookieHost(c.Cookie("affinity")) != rep.Host {
				t.Fatalf("a garbage cookie: %+v, %v", rep, err)
			}

			// The service down (fail open): requests still flow, and a
			// client's header naming a pod does not choose it.
			r.s.Server.Stop()
			target := r.s.Backends[2]
			forged := base64.StdEncoding.EncodeToString([]byte(target.Address()))
			landed := 0
			for range 12 {
				rep, _, err := r.client().Get("/", "x-affinity-host", forged)
				if err != nil {
					t.Fatalf("with the service down: %v", err)
				}
				if rep.Host == target.Name {
					landed++
				}
			}
			if landed == 12 {
				t.Fatalf("with the service down, 12 requests naming %s in x-affinity-host all landed there", target.Name)
			}
			if err := r.s.StartServer(context.Background()); err != nil {
				t.Fatal(err)
			}

			// The host of the first session leaves the pool and web's
			// endpoints: only its sessions move.
			gone := sessions[0].host
			var keep []int
			for i, b := range r.s.Backends {
				if b.Name != gone {
					keep = append(keep, i)
				}
			}
			if err := r.s.WriteConfig(keep...); err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			if err := r.s.WaitPoolHosts(ctx, r.s.Backends[keep[0]].Name, r.s.Backends[keep[1]].Name); err != nil {
				t.Fatal(err)
			}
			r.generate(keep...)
			for _, ss := range sessions {
				rep, _, err := ss.c.Get("/")
				switch {
				case err != nil:
					t.Fatalf("a session of %s after %s left: %v", ss.host, gone, err)
				case rep.Host == gone:
					t.Fatalf("a request reached %s after it left", gone)
				case ss.host == gone:
					ss.host = rep.Host
				case rep.Host != ss.host:
					t.Fatalf("a session of %s moved to %s when %s left", ss.host, rep.Host, gone)
				}
			}

			dead := r.s.Backends[keep[0]]
			dead.Proc.Kill()
			moved := 0
			for _, ss := range sessions {
				rep, _, err := ss.c.Get("/")
				switch {
				case err != nil:
					t.Fatalf("a session of %s after %s died: %v", ss.host, dead.Name, err)
				case rep.Host == dead.Name:
					t.Fatal("a request reached the dead backend")
				case ss.host == dead.Name:
					moved++
				case rep.Host != ss.host:
					t.Fatalf("a session of %s moved to %s when %s died", ss.host, rep.Host, dead.Name)
				}
			}
			t.Logf("%s: 24 sessions %v stick; the %d of %s are served elsewhere once it died", v.name, per, moved, dead.Name)

		})
	}
	t.Run("session-header without PILOT_ENABLE_PERSISTENT_SESSION_FILTER", func(t *testing.T) {
		r := runProxy(t, sessionHeader, false, sidecar)
		if r.hasExtProc() {
			t.Fatal("istiod inserted the ext_proc filter without the persistent session filter to go before")
		}
		hosts := map[string]bool{}
		c := r.client()
		for range 12 {
			rep, _, err := c.Get("/")
			if err != nil {
				t.Fatal(err)
			}
			hosts[rep.Host] = true
		}
		if c.Cookie("affinity") != "" || len(hosts) < 2 {
			t.Fatalf("one client's 12 requests reached %v, cookie %q: want no session kept", slices.Collect(mapKeys(hosts)), c.Cookie("affinity"))
		}
	})
}

func mapKeys(m map[string]bool) func(func(string) bool) {
	return func(yield func(string) bool) {
		for k := range m {
			if !yield(k) {
				return
			}
		}
	}
}
