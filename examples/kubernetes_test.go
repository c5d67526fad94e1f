package examples

import (
	"context"
	"fmt"
	"io"
	"maps"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"gopkg.in/yaml.v3"

	"github.com/envoy-affinity/envoy-affinity/internal/launch"
)

// k8s is the Kubernetes recipe, decoded.
type k8s struct {
	deployment deployment
	container  container
	config     configMap
	service    service
	pdb        podDisruptionBudget
	policy     networkPolicy
	web        service // the app's Service
	webPods    service // the app's headless Service
	flags      map[string]string
}

func loadK8s(t *testing.T) k8s {
	t.Helper()
	docs := recipeDocs(t, "kubernetes")
	var k k8s
	k.deployment = mustDecode[deployment](t, find(t, docs, "Deployment", "envoy-affinity"))
	if n := len(k.deployment.Spec.Template.Spec.Containers); n != 1 {
		t.Fatalf("the Deployment has %d containers, want 1", n)
	}
	k.container = k.deployment.Spec.Template.Spec.Containers[0]
	k.config = mustDecode[configMap](t, find(t, docs, "ConfigMap", "envoy-affinity-config"))
	k.service = mustDecode[service](t, find(t, docs, "Service", "envoy-affinity"))
	k.pdb = mustDecode[podDisruptionBudget](t, find(t, docs, "PodDisruptionBudget", "envoy-affinity"))
	k.policy = mustDecode[networkPolicy](t, find(t, docs, "NetworkPolicy", "envoy-affinity"))
	k.web = mustDecode[service](t, find(t, docs, "Service", "web"))
	k.webPods = mustDecode[service](t, find(t, docs, "Service", "web-pods"))
	k.flags = argFlags(t, k.container.Args)
	return k
}

// argFlags reads "-name value" pairs (the recipe's flags all take a value;
// that they parse is TestDeploymentRunsTheBinary's business).
func argFlags(t *testing.T, args []string) map[string]string {
	t.Helper()
	if len(args)%2 != 0 {
		t.Fatalf("args %q are not -flag value pairs", args)
	}
	out := map[string]string{}
	for i := 0; i < len(args); i += 2 {
		name, ok := strings.CutPrefix(args[i], "-")
		if !ok || strings.HasPrefix(name, "-") {
			t.Fatalf("args %q: %q is not a -flag", args, args[i])
		}
		out[name] = args[i+1]
	}
	return out
}

// containerPort returns the container port a name or number refers to.
func (k k8s) containerPort(t *testing.T, ref intOrString) int {
	t.Helper()
	for _, p := range k.container.Ports {
		if n, ok := ref.number(); (ok && n == p.ContainerPort) || string(ref) == p.Name {
			return p.ContainerPort
		}
	}
	t.Fatalf("port %q is not a port of container %s", ref, k.container.Name)
	return 0
}

// servicePort returns the Service's port of that name.
func servicePortNamed(t *testing.T, s service, name string) servicePort {
	t.Helper()
	for _, p := range s.Spec.Ports {
		if p.Name == name {
			return p
		}
	}
	t.Fatalf("Service %s has no port %q", s.Metadata.Name, name)
	return servicePort{}
}

func portOf(t *testing.T, addr string) int {
	t.Helper()
	_, p, err := net.SplitHostPort(addr)
	if err != nil {
		t.Fatal(err)
	}
	n, err := strconv.Atoi(p)
	if err != nil {
		t.Fatal(err)
	}
	return n
}

func subset(sel, labels map[string]string) bool {
	if len(sel) == 0 {
		return false
	}
	for k, v := range sel {
		if labels[k] != v {
			return false
		}
	}
	return true
}

// TestKubernetesWiring checks that the recipe's parts point at each other:
// ports and their names, the flags' addresses, probes, the config file's
// path, the keys' environment variable, selectors, and the shutdown times.
func TestKubernetesWiring(t *testing.T) {
	k := loadK8s(t)
	d, c, pod := k.deployment, k.container, k.deployment.Spec.Template.Spec
	labels := d.Spec.Template.Metadata.Labels

	if d.Spec.Replicas != 2 {
		t.Errorf("replicas %d, want 2", d.Spec.Replicas)
	}
	if !subset(d.Spec.Selector.MatchLabels, labels) || !subset(k.service.Spec.Selector, labels) || !subset(k.pdb.Spec.Selector.MatchLabels, labels) {
		t.Errorf("the Deployment's, Service's and PodDisruptionBudget's selectors must all select the pods' labels %v", labels)
	}
	if n, ok := k.pdb.Spec.MaxUnavailable.number(); !ok || n < 1 || n >= d.Spec.Replicas {
		t.Errorf("PodDisruptionBudget maxUnavailable %q: want 1..replicas-1", k.pdb.Spec.MaxUnavailable)
	}
	if !strings.HasPrefix(c.Image, "ghcr.io/envoy-affinity/envoy-affinity") {
		t.Errorf("image %q", c.Image)
	}

	// The service's listeners, the container's ports and the Service's.
	grpcPort, adminPort := portOf(t, k.flags["grpc-addr"]), portOf(t, k.flags["admin-addr"])
	for flag, want := range map[string]string{"grpc-addr": "0.0.0.0", "admin-addr": "0.0.0.0"} {
		if host, _, _ := net.SplitHostPort(k.flags[flag]); host != want {
			t.Errorf("-%s %s: listen on %s, or other pods cannot reach it", flag, k.flags[flag], want)
		}
	}
	if got := k.containerPort(t, "grpc"); got != grpcPort {
		t.Errorf("container port grpc %d, -grpc-addr port %d", got, grpcPort)
	}
	if got := k.containerPort(t, "admin"); got != adminPort {
		t.Errorf("container port admin %d, -admin-addr port %d", got, adminPort)
	}
	sg := servicePortNamed(t, k.service, "grpc")
	if k.containerPort(t, sg.TargetPort) != grpcPort || sg.Port != 9002 || sg.AppProtocol != "kubernetes.io/h2c" {
		t.Errorf("Service port grpc %+v: want 9002 to the gRPC listener, appProtocol kubernetes.io/h2c", sg)
	}
	if sa := servicePortNamed(t, k.service, "admin"); k.containerPort(t, sa.TargetPort) != adminPort || sa.Port != 9003 {
		t.Errorf("Service port admin %+v: want 9003 to the admin listener", sa)
	}

	// Probes on the admin listener; their paths are asked of the real
	// binary in TestDeploymentRunsTheBinary.
	for name, p := range map[string]*probe{"liveness": c.LivenessProbe, "readiness": c.ReadinessProbe} {
		if p == nil {
			t.Errorf("no %s probe", name)
			continue
		}
		if k.containerPort(t, p.HTTPGet.Port) != adminPort {
			t.Errorf("%s probe port %q is not the admin listener %d", name, p.HTTPGet.Port, adminPort)
		}
	}
	if c.LivenessProbe.HTTPGet.Path != "/healthz" || c.ReadinessProbe.HTTPGet.Path != "/readyz" {
		t.Errorf("probes %s and %s, want /healthz and /readyz", c.LivenessProbe.HTTPGet.Path, c.ReadinessProbe.HTTPGet.Path)
	}

	// The config file is the ConfigMap's key, where its volume is mounted.
	cfgPath := k.flags["config"]
	var mounted bool
	for _, m := range c.VolumeMounts {
		for _, v := range pod.Volumes {
			if v.Name == m.Name && v.ConfigMap != nil && v.ConfigMap.Name == k.config.Metadata.Name {
				_, inMap := k.config.Data[filepath.Base(cfgPath)]
				mounted = mounted || (filepath.Dir(cfgPath) == filepath.Clean(m.MountPath) && inMap && m.ReadOnly)
			}
		}
	}
	if !mounted {
		t.Errorf("-config %s is not a key of ConfigMap %s mounted read-only there", cfgPath, k.config.Metadata.Name)
	}

	// The keys: the variable the config names comes from a Secret.
	cfg := parseServiceConfig(t, "ConfigMap config.yaml", k.config.Data["config.yaml"])
	var fromSecret, memLimit bool
	for _, e := range c.Env {
		if e.Name == cfg.Keys.Env && e.ValueFrom != nil && e.ValueFrom.SecretKeyRef != nil && e.ValueFrom.SecretKeyRef.Key != "" {
			fromSecret = true
		}
		if e.Name == "GOMEMLIMIT" && e.ValueFrom != nil && e.ValueFrom.ResourceFieldRef != nil && e.ValueFrom.ResourceFieldRef.Resource == "limits.memory" {
			memLimit = c.Resources.Limits["memory"] != ""
		}
	}
	if cfg.Keys.Env == "" || !fromSecret {
		t.Errorf("keys.env %q must be set from a Secret (env valueFrom.secretKeyRef)", cfg.Keys.Env)
	}
	if !memLimit {
		t.Error("GOMEMLIMIT should follow the container's memory limit")
	}

	// Safe as shipped: the admin token comes from a Secret mounted
	// read-only, and only labelled clients reach the two ports.
	tokenFile := k.flags["admin-token-file"]
	var tokenMounted bool
	for _, m := range c.VolumeMounts {
		for _, v := range pod.Volumes {
			if v.Name == m.Name && v.Secret != nil && v.Secret.SecretName != "" && filepath.Dir(tokenFile) == filepath.Clean(m.MountPath) && m.ReadOnly {
				tokenMounted = v.Secret.DefaultMode&0o077 == 0
			}
		}
	}
	if tokenFile == "" || !tokenMounted {
		t.Errorf("-admin-token-file %q must be a file of a Secret mounted read-only there, readable by its owner only", tokenFile)
	}
	np := k.policy.Spec
	if !subset(np.PodSelector.MatchLabels, labels) || !slices.Equal(np.PolicyTypes, []string{"Ingress"}) || len(np.Ingress) == 0 {
		t.Errorf("NetworkPolicy %s must select the pods and restrict their ingress", k.policy.Metadata.Name)
	}
	for _, rule := range np.Ingress {
		if len(rule.From) == 0 || len(rule.Ports) == 0 {
			t.Errorf("NetworkPolicy rule %+v lets every client or every port in", rule)
		}
		for _, from := range rule.From {
			if from.PodSelector == nil || len(from.PodSelector.MatchLabels) == 0 {
				t.Errorf("NetworkPolicy peer %+v is not limited to labelled pods", from)
			}
		}
		for _, p := range rule.Ports {
			if port := k.containerPort(t, p.Port); port != grpcPort && port != adminPort {
				t.Errorf("NetworkPolicy opens port %q, not the gRPC or admin listener", p.Port)
			}
		}
	}

	// Shutdown: -shutdown-delay (serving, not ready, while the pod leaves
	// the Endpoints) and -shutdown-grace fit in the grace period.
	grace, err := time.ParseDuration(k.flags["shutdown-grace"])
	if err != nil {
		t.Fatalf("-shutdown-grace: %v", err)
	}
	pause, err := time.ParseDuration(k.flags["shutdown-delay"])
	if err != nil || pause <= 0 {
		t.Fatalf("-shutdown-delay %q: %v; the pod should keep serving while its removal spreads", k.flags["shutdown-delay"], err)
	}
	if tg := pod.TerminationGracePeriodSeconds; tg == nil || time.Duration(*tg)*time.Second <= pause+grace {
		t.Errorf("terminationGracePeriodSeconds must exceed -shutdown-delay %v plus -shutdown-grace %v", pause, grace)
	}

	// Security and resources.
	sc := c.SecurityContext
	if sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem || sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation || !slices.Equal(sc.Capabilities.Drop, []string{"ALL"}) {
		t.Errorf("container securityContext %+v: want a read-only root, no privilege escalation, capabilities dropped", sc)
	}
	if r := pod.SecurityContext; r.RunAsNonRoot == nil || !*r.RunAsNonRoot || r.RunAsUser == nil || *r.RunAsUser != dockerfileUser(t) {
		t.Errorf("pod securityContext: want runAsNonRoot and runAsUser %d (the image's user)", dockerfileUser(t))
	}
	if c.Resources.Requests["cpu"] == "" || c.Resources.Requests["memory"] == "" {
		t.Error("resources: want cpu and memory requests")
	}

	// The pool's hosts: the headless Service over the app's pods, on the
	// port the app's Service sends to.
	if len(cfg.Pools) != 1 || cfg.Pools[0].Discovery == nil || cfg.Pools[0].Discovery.DNS == nil {
		t.Fatal("the ConfigMap's config should have one pool with DNS discovery")
	}
	checkWebPods(t, k, cfg.Pools[0].Discovery.DNS.Name, cfg.Pools[0].Discovery.DNS.Port)
}

// checkWebPods checks that a DNS name and port are those of the app's
// headless Service and of the pods the app's Service sends to.
func checkWebPods(t *testing.T, k k8s, name string, port int) {
	t.Helper()
	if want := k.webPods.Metadata.Name + "." + k.webPods.Metadata.Namespace + ".svc.cluster.local"; name != want {
		t.Errorf("discovery.dns.name %q, want %q (the headless Service)", name, want)
	}
	if k.webPods.Spec.ClusterIP != "None" || !maps.Equal(k.webPods.Spec.Selector, k.web.Spec.Selector) {
		t.Errorf("Service %s must be headless and select the pods of Service %s", k.webPods.Metadata.Name, k.web.Metadata.Name)
	}
	if tp, ok := servicePortNamed(t, k.web, "http").TargetPort.number(); !ok || tp != port {
		t.Errorf("discovery.dns.port %d, but Service %s sends to the pods' port %v", port, k.web.Metadata.Name, tp)
	}
}

var (
	dockerUserRE  = regexp.MustCompile(`(?m)^USER (\d+):(\d+)$`)
	dockerFromRE  = regexp.MustCompile(`(?m)^FROM (\S+)`)
	goModGoRE     = regexp.MustCompile(`(?m)^go (\d+\.\d+)`)
	dockerBuildRE = regexp.MustCompile(`(?m)^RUN CGO_ENABLED=0 go build .* \./cmd/envoy-affinity$`)
)

// dockerfileUser is the numeric user the image runs as.
func dockerfileUser(t *testing.T) int {
	t.Helper()
	data, err := os.ReadFile("../Dockerfile")
	if err != nil {
		t.Fatal(err)
	}
	m := dockerUserRE.FindStringSubmatch(string(data))
	if m == nil {
		t.Fatal("Dockerfile: no numeric USER uid:gid")
	}
	n, _ := strconv.Atoi(m[1])
	return n
}

// TestDockerfile checks the image recipe: the module's Go release builds
// the static binary, which runs on distroless as a numeric non-root user
// (the Deployment's runAsUser), with the binary as entrypoint (the
// Deployment passes only args).
func TestDockerfile(t *testing.T) {
	data, err := os.ReadFile("../Dockerfile")
	if err != nil {
		t.Fatal(err)
	}
	text := string(data)
	mod, err := os.ReadFile("../go.mod")
	if err != nil {
		t.Fatal(err)
	}
	goVersion := goModGoRE.FindStringSubmatch(string(mod))[1]
	froms := dockerFromRE.FindAllStringSubmatch(text, -1)
	if len(froms) != 2 {
		t.Fatalf("want two stages, found %d", len(froms))
	}
	if froms[0][1] != "golang:"+goVersion {
		t.Errorf("build stage %s, want golang:%s (go.mod)", froms[0][1], goVersion)
	}
	if !strings.HasPrefix(froms[1][1], "gcr.io/distroless/static") {
		t.Errorf("final stage %s, want distroless static", froms[1][1])
	}
	if !dockerBuildRE.MatchString(text) {
		t.Error("no `RUN CGO_ENABLED=0 go build ... ./cmd/envoy-affinity`")
	}
	if uid := dockerfileUser(t); uid == 0 {
		t.Error("USER is root")
	}
	if !strings.Contains(text, `ENTRYPOINT ["/envoy-affinity"]`) || !strings.Contains(text, "COPY --from=build /out/envoy-affinity /envoy-affinity") {
		t.Error("the binary must be copied to /envoy-affinity and be the entrypoint")
	}
}

// TestDeploymentRunsTheBinary runs the real binary the way the Deployment
// does: its args (listen addresses moved to free loopback ports, -config to
// a copy of the ConfigMap's file whose DNS name is answered by a local DNS
// server), the keys in the variable the Secret fills. It then asks the
// probes' paths on the admin port, the gRPC health service on the gRPC
// port, and stops it with SIGTERM as the kubelet does.
func TestDeploymentRunsTheBinary(t *testing.T) {
	k := loadK8s(t)
	c := k.container
	dns, err := launch.NewDNSServer()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(dns.Close)
	dns.SetA("127.0.0.1")

	var cfg map[string]any
	if err := yaml.Unmarshal([]byte(k.config.Data["config.yaml"]), &cfg); err != nil {
		t.Fatal(err)
	}
	dnsCfg := cfg["pools"].([]any)[0].(map[string]any)["discovery"].(map[string]any)["dns"].(map[string]any)
	dnsCfg["server"] = dns.Addr()
	rendered, err := yaml.Marshal(cfg)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	cfgPath := filepath.Join(dir, "config.yaml")
	if err := os.WriteFile(cfgPath, rendered, 0o600); err != nil {
		t.Fatal(err)
	}

	grpcPort, err := launch.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	adminPort, err := launch.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	args := slices.Clone(c.Args)
	for i := 0; i+1 < len(args); i++ {
		switch args[i] {
		case "-config":
			args[i+1] = cfgPath
		case "-grpc-addr":
			args[i+1] = "127.0.0.1:" + strconv.Itoa(grpcPort)
		case "-admin-addr":
			args[i+1] = "127.0.0.1:" + strconv.Itoa(adminPort)
		case "-admin-token-file":
			args[i+1] = filepath.Join(dir, "admin-token")
			if err := os.WriteFile(args[i+1], []byte("s3cret\n"), 0o400); err != nil {
				t.Fatal(err)
			}
		}
	}

	// The flags parse with the binary's own parser: -h after them answers
	// help (exit 0) only if every flag before it is known and its value
	// valid.
	if out, err := exec.Command(bins.Server, append(slices.Clone(args), "-h")...).CombinedOutput(); err != nil {
		t.Fatalf("the Deployment's args do not parse: %v\n%s", err, out)
	}

	// The environment the Deployment gives: a key line where the Secret
	// puts one, resource fields in bytes as the kubelet resolves them.
	var env []string
	for _, e := range c.Env {
		switch {
		case e.ValueFrom == nil:
			env = append(env, e.Name+"="+e.Value)
		case e.ValueFrom.SecretKeyRef != nil:
			env = append(env, e.Name+"="+launch.NewKeyLine("k1", "ed25519"))
		case e.ValueFrom.ResourceFieldRef != nil:
			res, _ := strings.CutPrefix(e.ValueFrom.ResourceFieldRef.Resource, "limits.")
			env = append(env, e.Name+"="+strconv.FormatInt(quantityBytes(t, c.Resources.Limits[res]), 10))
		}
	}
	cmd := exec.Command(bins.Server, args...)
	cmd.Env = env
	// One writer for both streams: exec then writes from one goroutine,
	// and the log is read only after the process has exited.
	log := &strings.Builder{}
	cmd.Stdout, cmd.Stderr = log, log
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	stopped := false
	t.Cleanup(func() {
		if !stopped {
			_ = cmd.Process.Kill()
			<-exited
		}
		if t.Failed() {
			t.Logf("envoy-affinity log:\n%s", log.String())
		}
	})

	admin := "http://127.0.0.1:" + strconv.Itoa(adminPort)
	// Readiness comes once DNS discovery found the pool's hosts.
	notFound := false
	err = launch.Eventually(context.Background(), 20*time.Second, func() error {
		select {
		case err := <-exited:
			stopped = true
			return fmt.Errorf("exited: %v", err)
		default:
		}
		code, body, err := get(admin + c.ReadinessProbe.HTTPGet.Path)
		if err != nil {
			return err
		}
		if code == http.StatusNotFound { // no such endpoint: waiting will not help
			notFound = true
			return nil
		}
		if code != http.StatusOK {
			return fmt.Errorf("%s: %d %s", c.ReadinessProbe.HTTPGet.Path, code, body)
		}
		return nil
	})
	if err != nil || notFound {
		t.Fatalf("the readiness probe %s never passed: %v (404: %v)", c.ReadinessProbe.HTTPGet.Path, err, notFound)
	}
	if code, body, err := get(admin + c.LivenessProbe.HTTPGet.Path); err != nil || code != http.StatusOK {
		t.Fatalf("liveness probe %s: %d %q %v", c.LivenessProbe.HTTPGet.Path, code, body, err)
	}
	name := cfg["pools"].([]any)[0].(map[string]any)["discovery"].(map[string]any)["dns"].(map[string]any)["name"].(string)
	if !slices.Contains(dns.Asked(), name+".") {
		t.Errorf("DNS was asked %v, not %s", dns.Asked(), name)
	}
	if code, _, err := get(admin + "/debug/pools"); err != nil || code != http.StatusUnauthorized {
		t.Errorf("/debug/pools without the admin token: %d %v, want 401", code, err)
	}
	if _, body, err := get(admin+"/debug/pools", "Bearer s3cret"); err != nil || !strings.Contains(body, `"address": "127.0.0.1:8080"`) {
		t.Errorf("/debug/pools does not show the host DNS gave: %v\n%s", err, body)
	}

	// The gRPC listener serves (Envoy's ext_proc filter calls it there).
	conn, err := grpc.NewClient("127.0.0.1:"+strconv.Itoa(grpcPort), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	hr, err := healthpb.NewHealthClient(conn).Check(ctx, &healthpb.HealthCheckRequest{})
	if err != nil || hr.GetStatus() != healthpb.HealthCheckResponse_SERVING {
		t.Fatalf("gRPC health on the grpc port: %v %v", hr, err)
	}

	// SIGTERM, as the kubelet sends: not ready at once while still running
	// (the -shutdown-delay), then a clean exit.
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	err = launch.Eventually(context.Background(), 10*time.Second, func() error {
		select {
		case err := <-exited:
			stopped = true
			return fmt.Errorf("exited before the readiness probe failed: %v", err)
		default:
		}
		code, _, err := get(admin + c.ReadinessProbe.HTTPGet.Path)
		if err != nil {
			return err
		}
		if code != http.StatusServiceUnavailable {
			return fmt.Errorf("readiness %d after SIGTERM, want 503", code)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-exited:
		stopped = true
		if err != nil {
			t.Fatalf("exit after SIGTERM: %v", err)
		}
	case <-time.After(time.Minute):
		t.Fatal("still running a minute after SIGTERM")
	}
}

// quantityBytes reads a Kubernetes memory quantity with a binary suffix
// (the recipe's form, e.g. 256Mi).
func quantityBytes(t *testing.T, q string) int64 {
	t.Helper()
	for i, suffix := range []string{"Ki", "Mi", "Gi"} {
		if n, ok := strings.CutSuffix(q, suffix); ok {
			v, err := strconv.ParseInt(n, 10, 64)
			if err != nil {
				t.Fatalf("quantity %q: %v", q, err)
			}
			return v << (10 * (i + 1))
		}
	}
	t.Fatalf("quantity %q: want a Ki, Mi or Gi suffix", q)
	return 0
}

// get answers a GET's status and body.
// get fetches url, with an Authorization header when one is given.
func get(url string, authorization ...string) (int, string, error) {
	client := &http.Client{Timeout: time.Second}
	req, err := http.NewRequest(http.MethodGet, url, nil)
	if err != nil {
		return 0, "", err
	}
	for _, a := range authorization {
		req.Header.Set("Authorization", a)
	}
	resp, err := client.Do(req)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	return resp.StatusCode, string(body), err
}
