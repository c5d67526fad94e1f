package e2e_test

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/envoy-affinity/envoy-affinity/internal/launch"
)

// TestGracefulShutdown: sessions send requests through Envoy while the
// service gets SIGTERM. With -shutdown-delay it first says NOT_SERVING on
// gRPC health while still answering (Envoy's health check sees it), then
// stops taking streams, lets open ones finish and exits 0. No request fails:
// Envoy fails open in the gap, and once the service is back every session
// is on the host its cookie names again.
func TestGracefulShutdown(t *testing.T) {
	t.Parallel()
	s := newStackWith(t, launch.Options{Mode: "opaque", ServerArgs: []string{"-shutdown-delay", "3s", "-shutdown-grace", "5s"}})
	sessions := startSessions(t, s, 20)

	var (
		load             phasedLoad
		requests, failed int
		newSessions      int
		moved            = map[string]int{}
		perPhase         = map[string]int{}
	)
	load.run(t, sessions, 4, func(ss *session, at string, r launch.Reply, err error) {
		requests++
		perPhase[at]++
		switch {
		case err != nil:
			failed++
			t.Errorf("request of a %s session during %s: %v", ss.host, at, err)
		case r.Host != ss.host:
			// While the service answers it pins every session; with it
			// gone Envoy's fallback hashes the cookie.
			moved[at]++
		}
	}, func() {
		// A new session now and then, through the same shutdown.
		_, _, err := launch.NewClient(s.URL("")).Get("/")
		load.mu.Lock()
		defer load.mu.Unlock()
		if err != nil {
			failed++
			t.Errorf("new session during %s: %v", load.phase, err)
			return
		}
		newSessions++
	})
	setPhase := load.set
	waitRequests := func(n int) {
		t.Helper()
		if err := launch.Eventually(context.Background(), 20*time.Second, func() error {
			load.mu.Lock()
			defer load.mu.Unlock()
			if perPhase[load.phase] < n {
				return fmt.Errorf("%d requests in phase %s", perPhase[load.phase], load.phase)
			}
			return nil
		}); err != nil {
			t.Fatal(err)
		}
	}
	waitRequests(200)

	hcBefore, _ := s.EnvoyStat("cluster.envoy_affinity.health_check.failure")
	netBefore, _ := s.EnvoyStat("cluster.envoy_affinity.health_check.network_failure")
	failOpenBefore, _ := s.EnvoyStat("http.ingress.ext_proc.failure_mode_allowed")
	setPhase("not-ready")
	if err := s.Server.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	// Envoy's gRPC health check sees NOT_SERVING (a failure that is not a
	// network failure) while the process still serves.
	var sawNotServing bool
	if err := launch.Eventually(context.Background(), 10*time.Second, func() error {
		hc, _ := s.EnvoyStat("cluster.envoy_affinity.health_check.failure")
		nf, _ := s.EnvoyStat("cluster.envoy_affinity.health_check.network_failure")
		select {
		case <-s.Server.Done():
			return errors.New("the service exited before Envoy's health check saw NOT_SERVING")
		default:
		}
		if hc-hcBefore > nf-netBefore {
			sawNotServing = true
			return nil
		}
		return fmt.Errorf("health check failures %d (network %d)", hc-hcBefore, nf-netBefore)
	}); err != nil {
		t.Fatal(err)
	}
	healthy, _ := s.EnvoyStat("cluster.envoy_affinity.membership_healthy")
	failOpenNotReady, _ := s.EnvoyStat("http.ingress.ext_proc.failure_mode_allowed")
	failOpenNotReady -= failOpenBefore
	// From here on the service stops taking streams: Envoy fails open.
	setPhase("stopping")
	select {
	case <-s.Server.Done():
	case <-time.After(15 * time.Second):
		t.Fatal("the service did not exit within its delay and grace")
	}
	if err := s.Server.Err(); err != nil {
		t.Fatalf("the service exited with %v, want status 0", err)
	}
	setPhase("gone")
	waitRequests(100)

	if err := s.StartServer(context.Background()); err != nil {
		t.Fatal(err)
	}
	setPhase("after")
	waitRequests(200)
	load.stop()
	t.Logf("shutdown under load: %d requests, %d new sessions, %d failed; by phase (requests/moved): before SIGTERM %d/%d, not ready but serving %d/%d (failed open %d), stopping %d/%d, service gone %d/%d, after its restart %d/%d; Envoy saw NOT_SERVING: %v (healthy ext_proc hosts then: %d)",
		requests, newSessions, failed, perPhase["before"], moved["before"], perPhase["not-ready"], moved["not-ready"], failOpenNotReady,
		perPhase["stopping"], moved["stopping"], perPhase["gone"], moved["gone"], perPhase["after"], moved["after"], sawNotServing, healthy)
	if failed != 0 || moved["before"]+moved["not-ready"]+moved["after"] != 0 || perPhase["not-ready"] == 0 || failOpenNotReady != 0 || healthy != 0 {
		t.Fatal("want 0 failed, 0 moved while the service answers, requests served while not ready without failing open, and the ext_proc host unhealthy in Envoy")
	}
}

// TestRollingRestart: two replicas of the service behind Envoy's ext_proc
// cluster, restarted one after the other while sessions send requests, as a
// Deployment rolls. Each replica says NOT_SERVING on SIGTERM
// (-shutdown-delay), Envoy's gRPC health check takes it out, the other
// replica answers (same config and keys: the same decisions), and it comes
// back before the next one goes. Not one request fails, fails open or moves.
func TestRollingRestart(t *testing.T) {
	t.Parallel()
	yaml := filepath.Join(t.TempDir(), "opaque-2.yaml")
	const one = "        - endpoint: {address: {socket_address: {address: 127.0.0.1, port_value: 9002}}}\n"
	if err := launch.WriteVariant(envoyYAML("opaque.yaml"), yaml, one, one+strings.ReplaceAll(one, "9002", "9012")); err != nil {
		t.Fatal(err)
	}
	s := newStackWith(t, launch.Options{Mode: "opaque", EnvoyYAML: yaml, Replicas: 2,
		ServerArgs: []string{"-shutdown-delay", "3s", "-shutdown-grace", "5s"}})
	sessions := startSessions(t, s, 20)

	var (
		mu                        sync.Mutex
		requests, failed, moved   int
		newSessions, newMisplaced int
	)
	stopLoad := sessionLoad(t, sessions, 4, func(ss *session) {
		r, _, err := ss.c.Get("/")
		mu.Lock()
		defer mu.Unlock()
		requests++
		switch {
		case err != nil:
			failed++
			t.Errorf("request of a %s session: %v", ss.host, err)
		case r.Host != ss.host:
			moved++
		}
	}, func() {
		c := launch.NewClient(s.URL(""))
		r, _, err := c.Get("/")
		mu.Lock()
		defer mu.Unlock()
		switch {
		case err != nil:
			failed++
			t.Errorf("new session: %v", err)
		case s.CookieHost(c.Cookie("affinity")) != r.Host:
			newMisplaced++ // no cookie (failed open) or served elsewhere
		}
		newSessions++
	})
	healthy := func(n int) func() error {
		return func() error {
			if h, _ := s.EnvoyStat("cluster.envoy_affinity.membership_healthy"); h != n {
				return fmt.Errorf("%d healthy ext_proc hosts in Envoy, want %d", h, n)
			}
			return nil
		}
	}
	if err := launch.Eventually(context.Background(), 10*time.Second, healthy(2)); err != nil {
		t.Fatal(err)
	}
	failOpenBefore, _ := s.EnvoyStat("http.ingress.ext_proc.failure_mode_allowed")
	for i, r := range s.Replicas {
		if err := r.Proc.Signal(syscall.SIGTERM); err != nil {
			t.Fatal(err)
		}
		if err := launch.Eventually(context.Background(), 10*time.Second, healthy(1)); err != nil {
			t.Fatalf("replica %d going: %v", i, err)
		}
		select {
		case <-r.Proc.Done():
		case <-time.After(15 * time.Second):
			t.Fatalf("replica %d did not exit", i)
		}
		if err := r.Proc.Err(); err != nil {
			t.Fatalf("replica %d exited with %v", i, err)
		}
		if err := s.StartReplica(context.Background(), i); err != nil {
			t.Fatal(err)
		}
		if err := launch.Eventually(context.Background(), 10*time.Second, healthy(2)); err != nil {
			t.Fatalf("replica %d back: %v", i, err)
		}
	}
	stopLoad()
	failOpen, _ := s.EnvoyStat("http.ingress.ext_proc.failure_mode_allowed")
	failOpen -= failOpenBefore
	t.Logf("rolling restart of 2 replicas: %d requests of 20 sessions and %d new sessions, %d failed, %d failed open, %d moved, %d new sessions not on their cookie's host",
		requests, newSessions, failed, failOpen, moved, newMisplaced)
	if failed != 0 || failOpen != 0 || moved != 0 || newMisplaced != 0 || requests == 0 {
		t.Fatal("want every request served by the session's host with a replica deciding")
	}
}
