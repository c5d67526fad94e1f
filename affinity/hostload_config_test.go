package affinity

import (
	"strings"
	"testing"
	"time"
)

// TestLoadConfig: a load block takes its defaults from the pool's Envoy
// discovery, and a bad one is refused with its line and reason.
func TestLoadConfig(t *testing.T) {
	const hosts = "    hosts: [{address: '127.0.0.1:1'}]\n"
	defaults := []struct {
		name, pool string
		want       LoadPolicy
	}{
		{"from discovery.envoy", "  - name: app\n    discovery: {envoy: {admin: '127.0.0.1:9901', cluster: web}}\n    load: {}\n",
			LoadPolicy{Source: LoadSource{Admins: "127.0.0.1:9901", Cluster: "web", Interval: time.Second}, StaleAfter: 5 * time.Second, Factor: 1.25}},
		{"listed admins, the pool's name", "  - name: app\n    load: {envoy_admins: ['10.0.0.1:9901', 'http://10.0.0.2:9901'], interval: 200ms, factor: 2}\n" + hosts,
			LoadPolicy{Source: LoadSource{Admins: "10.0.0.1:9901,http://10.0.0.2:9901", Cluster: "app", Interval: 200 * time.Millisecond}, StaleAfter: time.Second, Factor: 2}},
		{"everything given", "  - name: app\n    load: {envoy_admins: ['a:1'], cluster: c, interval: 2s, stale_after: 3s, factor: 1}\n" + hosts,
			LoadPolicy{Source: LoadSource{Admins: "a:1", Cluster: "c", Interval: 2 * time.Second}, StaleAfter: 3 * time.Second, Factor: 1}},
	}
	for _, tt := range defaults {
		t.Run(tt.name, func(t *testing.T) {
			snap := mustBuild(t, "keys: {env: K}\npools:\n"+tt.pool)
			if got := snap.Pools[0].Load; got == nil || *got != tt.want {
				t.Fatalf("load %+v, want %+v", got, tt.want)
			}
		})
	}
	t.Run("without the block, off", func(t *testing.T) {
		if l := mustBuild(t, "keys: {env: K}\npools:\n  - name: app\n"+hosts).Pools[0].Load; l != nil {
			t.Fatalf("load %+v", l)
		}
	})
	errs := []struct {
		name, block string
		want        []string
	}{
		{"no admin", "    load: {}\n", []string{"c.yaml:4: pools[0].load.envoy_admins: name the admin address"}},
		{"bad admins", "    load:\n      envoy_admins: ['envoy', 'a:1', 'http://a:1', 'a:1,b:2']\n", []string{
			`c.yaml:5: pools[0].load.envoy_admins[0]: "envoy" is not host:port`,
			`c.yaml:5: pools[0].load.envoy_admins[2]: "http://a:1" is listed twice`,
			`c.yaml:5: pools[0].load.envoy_admins[3]: "a:1,b:2" is not host:port`}},
		{"too fast, stale before read, factor below 1", "    load:\n      envoy_admins: ['a:1']\n      interval: 10ms\n      stale_after: 5ms\n      factor: 0.5\n", []string{
			"c.yaml:6: pools[0].load.interval: 10ms is too short",
			"c.yaml:7: pools[0].load.stale_after: 5ms is shorter than interval 10ms",
			"c.yaml:8: pools[0].load.factor: 0.5: use a factor from 1.0"}},
		{"unknown field", "    load: {envoy_admin: 'a:1'}\n", []string{"c.yaml:4: field envoy_admin not found"}},
	}
	for _, tt := range errs {
		t.Run(tt.name, func(t *testing.T) {
			_, err := ParseConfig("c.yaml", []byte("keys: {env: K}\npools:\n  - name: app\n"+tt.block+hosts))
			if err == nil {
				t.Fatal("accepted")
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error lacks %q; got:\n%v", w, err)
				}
			}
		})
	}
}
