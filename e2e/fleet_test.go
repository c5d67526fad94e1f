package e2e_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/envoy-affinity/envoy-affinity/affinity/redisstore"
	"github.com/envoy-affinity/envoy-affinity/internal/launch"
)

// fleetYAML writes a copy of envoy/<name> whose ext_proc cluster lists n
// replicas of the service (gRPC ports 9002, 9012, 9022, ...). Replicas that
// a test stops for good stay listed (a control plane would remove them), so
// Envoy is told never to ask an unhealthy one: its default panic threshold
// (50%) spreads streams over all replicas when fewer are healthy.
func fleetYAML(t *testing.T, name string, n int) string {
	t.Helper()
	const one = "        - endpoint: {address: {socket_address: {address: 127.0.0.1, port_value: 9002}}}\n"
	all := one
	for i := 1; i < n; i++ {
		all += strings.ReplaceAll(one, "9002", strconv.Itoa(9002+10*i))
	}
	dir := t.TempDir()
	listed := filepath.Join(dir, "listed-"+name)
	if err := launch.WriteVariant(envoyYAML(name), listed, one, all); err != nil {
		t.Fatal(err)
	}
	const hc = "      grpc_health_check: {}\n"
	noPanic := filepath.Join(dir, "no-panic-"+name)
	if err := launch.WriteVariant(listed, noPanic, hc, hc+"    common_lb_config: {healthy_panic_threshold: {value: 0}}\n"); err != nil {
		t.Fatal(err)
	}
	// A dozen processes share two cores while the fleet tests run in
	// parallel: a decision may take longer than the YAML's 0.2 s, and a
	// request that fails open would look like a session that moved.
	path := filepath.Join(dir, name)
	if err := launch.WriteVariant(noPanic, path, "message_timeout: 0.2s", "message_timeout: 2s"); err != nil {
		t.Fatal(err)
	}
	return path
}

// failedOpen is how many requests both Envoys sent on without a decision.
func (f *fleet) failedOpen() int { return f.failedOpenAt(0) + f.failedOpenAt(1) }

// failedOpenAt is failedOpen of the first Envoy (0) or the second (1).
func (f *fleet) failedOpenAt(i int) int {
	stat := f.s.EnvoyStat
	if i == 1 {
		stat = f.s.Gateways[0].Stat
	}
	n, _ := stat("http.ingress.ext_proc.failure_mode_allowed")
	return n
}

func startRedis(t *testing.T) *launch.Redis {
	t.Helper()
	r, err := launch.StartRedis(context.Background(), t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(r.Stop)
	return r
}

// redisStore is the config's store block for a Redis at addrs (one
// server, or nodes of a Cluster once Mode says so), fast enough for a test.
func redisStore(addrs ...string) *launch.RedisStore {
	return &launch.RedisStore{Addresses: addrs, SyncInterval: 200 * time.Millisecond, Timeout: 50 * time.Millisecond}
}

// plainGet sends GET / to base with headers ("k", "v", ...) and no cookie
// jar: each fleet session carries exactly its key.
func plainGet(c *http.Client, base string, headers ...string) (launch.Reply, error) {
	req, err := http.NewRequest(http.MethodGet, base+"/", nil)
	if err != nil {
		return launch.Reply{}, err
	}
	for i := 0; i+1 < len(headers); i += 2 {
		req.Header.Add(headers[i], headers[i+1])
	}
	resp, err := c.Do(req)
	if err != nil {
		return launch.Reply{}, err
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		return launch.Reply{}, fmt.Errorf("status %d: %s", resp.StatusCode, body)
	}
	var r launch.Reply
	if err := json.Unmarshal(body, &r); err != nil {
		return r, err
	}
	for _, sc := range resp.Header.Values("Set-Cookie") {
		if name, v, _ := strings.Cut(strings.SplitN(sc, ";", 2)[0], "="); name == "app_session" {
			r.Session = v
		}
	}
	return r, nil
}

// fleetSession is a session keyed by a header or by the application's own
// cookie (learned from the response that set it).
type fleetSession struct {
	headers []string
	host    string
}

// fleet is three replicas of the service behind two Envoys (and a fourth
// to start later), three backends of which two are in the pool, and
// optionally a shared Redis.
type fleet struct {
	s        *launch.Stack
	gateways []string
	client   *http.Client
	sessions []*fleetSession
}

func newFleet(t *testing.T, store *launch.RedisStore) *fleet {
	t.Helper()
	return newFleetWith(t, launch.Options{Store: store,
		KeySources: []launch.KeySource{{Type: "header", Name: "x-session-id"}, {Type: "app_cookie", Name: "app_session"}, {Type: "cookie"}}})
}

// newFleetWith starts a fleet from opts (mode verified, four replicas of
// which the last is started later, two hosts of three in the pool).
func newFleetWith(t *testing.T, opts launch.Options) *fleet {
	t.Helper()
	opts.Mode, opts.Replicas, opts.Later = "verified", 4, 1
	opts.EnvoyYAML = fleetYAML(t, "verified.yaml", 4)
	opts.ServerArgs = []string{"-shutdown-delay", "2s", "-shutdown-grace", "3s"}
	s := newStackWith(t, opts)
	ctx := context.Background()
	if err := s.SetHosts(ctx, 0, 1); err != nil {
		t.Fatal(err)
	}
	g, err := s.AddEnvoy(ctx)
	if err != nil {
		t.Fatal(err)
	}
	f := &fleet{s: s, gateways: []string{s.URL(""), g.URL("")},
		client: &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: 16}}}
	f.waitExtProcHealthy(t, 3)
	return f
}

// newHeaderFleet is a fleet keyed by the x-session-id header alone, on
// all three backends, sharing redis, with the load block load (none when
// nil).
func newHeaderFleet(t *testing.T, redis *launch.Redis, load *launch.Load) *fleet {
	t.Helper()
	f := newFleetWith(t, launch.Options{Store: redisStore(redis.Addr()),
		KeySources: []launch.KeySource{{Type: "header", Name: "x-session-id"}}, Load: load})
	if err := f.s.SetHosts(context.Background(), 0, 1, 2); err != nil {
		t.Fatal(err)
	}
	return f
}

// replicaGet fetches path from replica i's admin API.
func (f *fleet) replicaGet(i int, path string) (string, error) {
	resp, err := f.client.Get("http://127.0.0.1:" + strconv.Itoa(f.s.Replicas[i].AdminPort) + path)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	return string(body), err
}

// replicaMetric reads one unlabelled metric of replica i.
func (f *fleet) replicaMetric(i int, name string) (float64, error) {
	body, err := f.replicaGet(i, "/metrics")
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(body, "\n") {
		if v, ok := strings.CutPrefix(line, name+" "); ok {
			return strconv.ParseFloat(v, 64)
		}
	}
	return 0, fmt.Errorf("replica %d has no metric %s", i, name)
}

// waitExtProcHealthy waits until both Envoys see n healthy replicas.
func (f *fleet) waitExtProcHealthy(t *testing.T, n int) {
	t.Helper()
	stats := []func(string) (int, error){f.s.EnvoyStat, f.s.Gateways[0].Stat}
	err := launch.Eventually(context.Background(), 15*time.Second, func() error {
		for i, stat := range stats {
			got, err := stat("cluster.envoy_affinity.membership_healthy")
			if err != nil {
				return err
			}
			if got != n {
				return fmt.Errorf("envoy %d sees %d healthy replicas, want %d", i+1, got, n)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// open starts n header-key sessions and n learned-application-cookie
// sessions, their first requests spread over both Envoys.
func (f *fleet) open(t *testing.T, n int) {
	t.Helper()
	for i := range n {
		f.openHeader(t, fmt.Sprintf("device-%d", i), i)
		r, err := plainGet(f.client, f.gateways[(i+1)%2])
		if err != nil {
			t.Fatal(err)
		}
		if r.Session == "" {
			t.Fatal("the backend set no app_session cookie")
		}
		f.sessions = append(f.sessions, &fleetSession{headers: []string{"Cookie", "app_session=" + r.Session}, host: r.Host})
	}
}

// openHeader starts a header-key session through Envoy i%2.
func (f *fleet) openHeader(t *testing.T, key string, i int) string {
	t.Helper()
	r, err := plainGet(f.client, f.gateways[i%2], "x-session-id", key)
	if err != nil {
		t.Fatal(err)
	}
	f.sessions = append(f.sessions, &fleetSession{headers: []string{"x-session-id", key}, host: r.Host})
	return r.Host
}

// check sends each session's request through both Envoys and counts the
// sessions served elsewhere than where they started, and failed requests.
// A round in which Envoy let requests through without a decision (failed
// open: they went where its fallback sent them) is sent again, up to three
// times: a session the service moved stays moved, a fail-open does not.
func (f *fleet) check(t *testing.T) (moved, failed int) {
	t.Helper()
	for range 3 {
		before := f.failedOpen()
		moved, failed = f.checkOnce(t)
		if moved == 0 || f.failedOpen() == before {
			return moved, failed
		}
		t.Logf("%d sessions served elsewhere in a round with %d requests failed open: sent again", moved, f.failedOpen()-before)
	}
	return moved, failed
}

func (f *fleet) checkOnce(t *testing.T) (moved, failed int) {
	t.Helper()
	var mu sync.Mutex
	work := make(chan *fleetSession)
	var wg sync.WaitGroup
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for ss := range work {
				away := false
				for _, base := range f.gateways {
					r, err := plainGet(f.client, base, ss.headers...)
					mu.Lock()
					if err != nil {
						failed++
						t.Errorf("request: %v", err)
					} else if r.Host != ss.host {
						away = true
					}
					mu.Unlock()
				}
				if away {
					mu.Lock()
					moved++
					mu.Unlock()
				}
			}
		}()
	}
	for _, ss := range f.sessions {
		work <- ss
	}
	close(work)
	wg.Wait()
	return moved, failed
}

// TestFleet: three replicas of the service behind two Envoys, with 300
// header-key and 300 learned-application-cookie sessions. The replicas are
// restarted one by one, a host joins, and a fourth replica started cold
// takes over from the three. With the shared Redis not one session moves;
// with each replica's own memory they do (both figures logged).
func TestFleet(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		name   string
		shared bool
	}{{"redis", true}, {"memory", false}} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			var store *launch.RedisStore
			var redis *launch.Redis
			if tt.shared {
				redis = startRedis(t)
				store = redisStore(redis.Addr())
			}
			f := newFleet(t, store)
			f.open(t, 300)
			ctx := context.Background()
			report := []string{}
			step := func(what string) int {
				moved, failed := f.check(t)
				report = append(report, fmt.Sprintf("%s: %d moved, %d failed", what, moved, failed))
				return moved
			}
			total := step("opened, 3 replicas, 2 Envoys")
			for i := range 3 {
				f.s.Replicas[i].Proc.Stop()
				if err := f.s.StartReplica(ctx, i); err != nil {
					t.Fatal(err)
				}
				f.waitExtProcHealthy(t, 3)
				total += step(fmt.Sprintf("replica %d restarted", i+1))
			}
			if err := f.s.SetHosts(ctx, 0, 1, 2); err != nil {
				t.Fatal(err)
			}
			total += step("a host joined")
			if err := f.s.StartReplica(ctx, 3); err != nil {
				t.Fatal(err)
			}
			for i := range 3 {
				f.s.Replicas[i].Proc.Stop()
			}
			f.waitExtProcHealthy(t, 1)
			total += step("a fourth replica, cold, alone")
			t.Logf("%s store, %d sessions:\n  %s", tt.name, len(f.sessions), strings.Join(report, "\n  "))
			switch {
			case tt.shared && total != 0:
				t.Fatalf("sessions moved with the shared store: %s", strings.Join(report, "; "))
			case !tt.shared && total == 0:
				t.Fatal("no session moved with each replica's own memory: the test shows nothing")
			}
			if tt.shared {
				if get := redis.Info("stats", "total_commands_processed"); get == "" {
					t.Fatal("redis served no commands")
				}
			}
		})
	}
}

// poolStates returns replica i's host states of its pool by host ID.
func (f *fleet) poolStates(i int) (map[string]string, error) {
	return poolStatesAt("http://127.0.0.1:" + strconv.Itoa(f.s.Replicas[i].AdminPort) + "/debug/pools")
}

// poolStatesAt is each host's state in the first pool of the /debug/pools
// at url (active, draining, down).
func poolStatesAt(url string) (map[string]string, error) {
	resp, err := http.Get(url)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	var out struct {
		Pools []struct {
			Hosts []struct{ ID, State string } `json:"hosts"`
		} `json:"pools"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&out); err != nil {
		return nil, err
	}
	states := map[string]string{}
	for _, h := range out.Pools[0].Hosts {
		states[h.ID] = h.State
	}
	return states, nil
}

// TestFleetDrain: a drain sent to one replica through its admin API is in
// force on every replica within the sync interval, and still after every
// replica was restarted.
func TestFleetDrain(t *testing.T) {
	t.Parallel()
	redis := startRedis(t)
	f := newFleet(t, redisStore(redis.Addr()))
	ctx := context.Background()
	if err := f.s.SetHosts(ctx, 0, 1, 2); err != nil {
		t.Fatal(err)
	}
	resp, err := f.client.Post("http://127.0.0.1:"+strconv.Itoa(f.s.Replicas[1].AdminPort)+"/pools/default/hosts/backend-2/drain?deadline=10m", "", nil)
	if err != nil {
		t.Fatal(err)
	}
	var reply struct {
		State  string `json:"state"`
		Shared *bool  `json:"shared"`
	}
	err = json.NewDecoder(resp.Body).Decode(&reply)
	resp.Body.Close()
	if err != nil || reply.State != "draining" || reply.Shared == nil || !*reply.Shared {
		t.Fatalf("drain reply %+v, %v", reply, err)
	}
	start := time.Now()
	drainedEverywhere := func() error {
		for i := range 3 {
			states, err := f.poolStates(i)
			if err != nil {
				return err
			}
			if states["backend-2"] != "draining" {
				return fmt.Errorf("replica %d: backend-2 is %q", i+1, states["backend-2"])
			}
		}
		return nil
	}
	if err := launch.Eventually(ctx, 10*time.Second, drainedEverywhere); err != nil {
		t.Fatal(err)
	}
	took := time.Since(start)
	newKeysAvoid := func(prefix string) {
		t.Helper()
		failedOpen := 0
		for i := range 60 {
			key := fmt.Sprintf("%s-%d", prefix, i)
			// A request Envoy sent on without a decision (a replica's
			// connection lost in a restart) was not placed by the service,
			// and left the key unbound: it is sent again.
			err := launch.Eventually(context.Background(), 10*time.Second, func() error {
				before := f.failedOpen()
				r, err := plainGet(f.client, f.gateways[i%2], "x-session-id", key)
				if err != nil {
					return err
				}
				if f.failedOpen() != before {
					failedOpen++
					return fmt.Errorf("%s failed open", key)
				}
				if r.Host == "backend-2" {
					t.Fatalf("new key %s placed on the draining host", key)
				}
				return nil
			})
			if err != nil {
				t.Fatal(err)
			}
		}
		t.Logf("%s: 60 new keys, none on the draining host; %d requests failed open and were sent again", prefix, failedOpen)
	}
	newKeysAvoid("after-drain")

	// Every replica restarted at once: the drain is still in force.
	var wg sync.WaitGroup
	for i := range 3 {
		wg.Go(func() { f.s.Replicas[i].Proc.Stop() })
	}
	wg.Wait()
	for i := range 3 {
		if err := f.s.StartReplica(ctx, i); err != nil {
			t.Fatal(err)
		}
	}
	f.waitExtProcHealthy(t, 3)
	if err := drainedEverywhere(); err != nil {
		t.Fatalf("after every replica restarted: %v", err)
	}
	newKeysAvoid("after-restart")
	t.Logf("drain sent to replica 2 in force on all three within %v (sync_interval 200ms); in force after all restarted", took.Round(time.Millisecond))
	if took > 2*time.Second {
		t.Fatalf("the drain took %v to reach every replica (sync_interval 200ms)", took)
	}
}

// TestFleetRedisDown: Redis is killed under load and restarted empty at
// the same address. No request fails; the replicas answer from their own
// memory meanwhile, return to the shared store by themselves, and write
// back what they know.
func TestFleetRedisDown(t *testing.T) {
	t.Parallel()
	redis := startRedis(t)
	f := newFleet(t, redisStore(redis.Addr()))
	f.open(t, 100)
	var (
		mu              sync.Mutex
		requests        int
		failed          int
		movedByPhase    = map[string]map[*fleetSession]bool{}
		phase           = "before"
		stop            = make(chan struct{})
		wg              sync.WaitGroup
		requestsByPhase = map[string]int{}
	)
	for w := range 6 {
		wg.Go(func() {
			for i := w; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				ss := f.sessions[i%len(f.sessions)]
				r, err := plainGet(f.client, f.gateways[i%2], ss.headers...)
				mu.Lock()
				requests++
				requestsByPhase[phase]++
				switch {
				case err != nil:
					failed++
					t.Errorf("request (%s): %v", phase, err)
				case r.Host != ss.host:
					if movedByPhase[phase] == nil {
						movedByPhase[phase] = map[*fleetSession]bool{}
					}
					movedByPhase[phase][ss] = true
				}
				mu.Unlock()
			}
		})
	}
	setPhase := func(p string) {
		mu.Lock()
		phase = p
		mu.Unlock()
	}
	allShared := func(want float64) func() error {
		return func() error {
			for i := range 3 {
				v, err := f.replicaMetric(i, "envoy_affinity_store_shared")
				if err != nil {
					return err
				}
				if v != want {
					return fmt.Errorf("replica %d: store_shared %v, want %v", i+1, v, want)
				}
			}
			return nil
		}
	}
	ctx := context.Background()
	time.Sleep(time.Second) // load before the crash
	setPhase("redis down")
	redis.Kill()
	if err := launch.Eventually(ctx, 10*time.Second, allShared(0)); err != nil {
		t.Fatal(err)
	}
	time.Sleep(time.Second) // load while every replica answers alone
	if err := redis.Start(ctx); err != nil {
		t.Fatal(err)
	}
	setPhase("redis back")
	start := time.Now()
	if err := launch.Eventually(ctx, 10*time.Second, allShared(1)); err != nil {
		t.Fatal(err)
	}
	back := time.Since(start)
	time.Sleep(time.Second) // load after
	close(stop)
	wg.Wait()
	restored := 0.0
	for i := range 3 {
		v, err := f.replicaMetric(i, "envoy_affinity_store_restored_total")
		if err != nil {
			t.Fatal(err)
		}
		restored += v
	}
	keys, _ := redis.CLI("DBSIZE")
	t.Logf("%d requests, %d failed; by phase (requests, sessions served elsewhere): before %d/%d, redis down %d/%d, redis back %d/%d; "+
		"shared again on every replica %v after the restart; %v bindings restored from the replicas' memory, %s keys in Redis after",
		requests, failed, requestsByPhase["before"], len(movedByPhase["before"]), requestsByPhase["redis down"], len(movedByPhase["redis down"]),
		requestsByPhase["redis back"], len(movedByPhase["redis back"]), back.Round(time.Millisecond), restored, keys)
	if failed != 0 || len(movedByPhase["before"]) != 0 {
		t.Fatal("want 0 failed requests and no session moved before the crash")
	}
	if requestsByPhase["redis down"] == 0 || requestsByPhase["redis back"] == 0 {
		t.Fatal("no load during the outage or after it")
	}
}

// TestFleetCluster: the fleet's header-key sessions on a Redis Cluster stay
// on their hosts when a host joins, and the keys of the live masters while
// one master is dead. The dead master's keys are answered from each service
// replica's own memory: a key a replica never served is placed anew, and
// may land elsewhere (counted, not asserted). With a replica per master the
// Cluster fails over, and then every session is where it started.
func TestFleetCluster(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		name     string
		replicas int
	}{{"three masters", 0}, {"three masters with a replica each", 1}} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			ctx := context.Background()
			c, err := launch.StartRedisCluster(ctx, t.TempDir(), 3, tt.replicas, "--cluster-require-full-coverage", "no")
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(c.Stop)
			store := redisStore(c.Addrs()...)
			store.Mode = "cluster"
			f := newFleetWith(t, launch.Options{Store: store, KeySources: []launch.KeySource{{Type: "header", Name: "x-session-id"}, {Type: "cookie"}}})
			for i := range 200 {
				f.openHeader(t, fmt.Sprintf("device-%d", i), i)
			}
			if err := f.s.SetHosts(ctx, 0, 1, 2); err != nil {
				t.Fatal(err)
			}
			moved, failed := f.check(t)
			if moved+failed != 0 {
				t.Fatalf("a host joined: %d moved, %d failed", moved, failed)
			}
			// The master that holds the first session's key dies.
			victim, onVictim := c.Nodes[0], map[string]bool{}
			for _, n := range c.Nodes[:3] {
				keys, _ := n.CLI("KEYS", "*")
				for _, k := range strings.Fields(keys) {
					if k == redisstore.BindingKey("envoy-affinity:", "default", "h:device-0") {
						victim = n
					}
				}
			}
			keys, _ := victim.CLI("KEYS", "*")
			for _, ss := range f.sessions {
				onVictim[ss.headers[1]] = strings.Contains(keys, redisstore.BindingKey("envoy-affinity:", "default", "h:"+ss.headers[1]))
			}
			victim.Kill()
			split := func(moved map[*fleetSession]bool) (dead, live int) {
				for ss := range moved {
					if onVictim[ss.headers[1]] {
						dead++
					} else {
						live++
					}
				}
				return dead, live
			}
			failed = 0
			movedDead, movedLive := split(f.movedSessions(t, &failed))
			report := fmt.Sprintf("%s: 200 header-key sessions, %d of their keys on the killed master. Right after the kill: %d failed, "+
				"sessions served elsewhere: %d of the live masters' keys, %d of the dead master's", tt.name, countTrue(onVictim), failed, movedLive, movedDead)
			if tt.replicas > 0 {
				// Its replica takes over (cluster-node-timeout 1s); then
				// every session is where it started.
				start := time.Now()
				if err := launch.Eventually(ctx, 20*time.Second, func() error {
					return c.FailedOver(victim)
				}); err != nil {
					t.Fatal(err)
				}
				took := time.Since(start)
				dead, live := split(f.movedSessions(t, &failed))
				report += fmt.Sprintf("; failed over in %v, then %d failed, %d + %d served elsewhere", took.Round(10*time.Millisecond), failed, live, dead)
				if dead+live != 0 {
					t.Error("sessions away from their host after the Cluster failed over")
				}
			}
			t.Logf("%s; %d requests failed open", report, f.failedOpen())
			if failed != 0 || movedLive != 0 {
				t.Fatal("want no failed request and no session of a live master's key moved")
			}
		})
	}
}

func countTrue(m map[string]bool) int {
	n := 0
	for _, v := range m {
		if v {
			n++
		}
	}
	return n
}

// movedSessions sends each session's request through both Envoys and
// returns the sessions served elsewhere than where they started.
func (f *fleet) movedSessions(t *testing.T, failed *int) map[*fleetSession]bool {
	t.Helper()
	moved := map[*fleetSession]bool{}
	for i, ss := range f.sessions {
		for g := range f.gateways {
			r, err := plainGet(f.client, f.gateways[(i+g)%2], ss.headers...)
			switch {
			case err != nil:
				*failed++
				t.Errorf("request: %v", err)
			case r.Host != ss.host:
				moved[ss] = true
			}
		}
	}
	return moved
}

// TestFleetBoundedLoads: three replicas place new sessions under a strict
// cap (factor 1.0) from counts they exchange every sync interval; how far
// over the cap the fullest host goes is measured, with the shared store
// and with each replica's own counts.
func TestFleetBoundedLoads(t *testing.T) {
	t.Parallel()
	for _, shared := range []bool{true, false} {
		name := map[bool]string{true: "redis", false: "memory"}[shared]
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			var store *launch.RedisStore
			if shared {
				store = redisStore(startRedis(t).Addr())
			}
			f := newFleetWith(t, launch.Options{Store: store, LoadFactor: 1.0})
			if err := f.s.SetHosts(context.Background(), 0, 1, 2); err != nil {
				t.Fatal(err)
			}
			const n = 600
			var mu sync.Mutex
			perHost := map[string]int{}
			var wg sync.WaitGroup
			for w := range 6 {
				wg.Go(func() {
					for i := w; i < n; i += 6 {
						r, err := plainGet(f.client, f.gateways[i%2])
						if err != nil {
							t.Error(err)
							return
						}
						mu.Lock()
						perHost[r.Host]++
						mu.Unlock()
					}
				})
			}
			wg.Wait()
			most := 0
			for _, c := range perHost {
				most = max(most, c)
			}
			limit := n / 3 // ⌈1.0 × mean⌉
			t.Logf("%s: %d new sessions over 3 hosts from 3 replicas, cap %d: %v, the fullest %d (%+d, %.1f%% over)",
				name, n, limit, perHost, most, most-limit, 100*float64(most-limit)/float64(limit))
			if shared && most > limit+limit/10 {
				t.Fatalf("the fullest host is %d over the cap with the shared counts", most-limit)
			}
		})
	}
}
