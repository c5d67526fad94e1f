package affinity

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

const validConfig = `keys:
  file: keys.txt
pools:
  - name: app
    cookie:
      name: sess
      lifetime: permanent
    session:
      absolute_timeout: 2h
    hosts:
      - address: 127.0.0.1:8081
        name: web-1
      - address: 127.0.0.1:8082
        weight: 3
`

func TestParseConfigDefaults(t *testing.T) {
	cfg, err := ParseConfig("c.yaml", []byte(validConfig))
	if err != nil {
		t.Fatal(err)
	}
	p := cfg.Pools[0]
	if p.Cookie.Name != "sess" || p.Cookie.Path != "/" || !*p.Cookie.Secure || !*p.Cookie.HTTPOnly || p.Cookie.SameSite != "lax" {
		t.Fatalf("cookie defaults: %+v", p.Cookie)
	}
	if p.Session.AbsoluteTimeout != 2*time.Hour {
		t.Fatalf("absolute_timeout = %v", p.Session.AbsoluteTimeout)
	}
	snap := cfg.Build(testKeyring(t))
	pool, ok := snap.Pool("", "app")
	if !ok || pool.Hosts.Len() != 2 || pool.Cookie.Lifetime != LifetimePermanent {
		t.Fatalf("pool: %+v", pool)
	}
	if h, ok := pool.Hosts.Lookup("web-1"); !ok || h.Address != "127.0.0.1:8081" || h.Weight != 1 {
		t.Fatalf("named host: %+v", h)
	}
	if hs := pool.Hosts.Hosts(); hs[1].Weight != 3 || strings.Contains(hs[1].ID, "127") {
		t.Fatalf("unnamed host: %+v", hs[1])
	}
}

func TestParseConfigErrors(t *testing.T) {
	tests := []struct {
		name string
		yaml string
		want []string
	}{
		{
			name: "every problem at once, each with its line",
			yaml: `keys: {}
pools:
  - name: a
    cookie:
      name: "bad name"
      same_site: sometimes
      lifetime: forever
    session:
      absolute_timeout: 10ms
    hosts:
      - address: localhost:80
      - address: 127.0.0.1:0
      - address: 127.0.0.1:81
        weight: 0
        name: "x y"
      - address: 127.0.0.1:81
  - name: a
    hosts: []
`,
			want: []string{
				"c.yaml:1: keys: name the signing keys",
				`c.yaml:5: pools[0].cookie.name: "bad name" is not a valid cookie name`,
				`c.yaml:6: pools[0].cookie.same_site: "sometimes"`,
				`c.yaml:7: pools[0].cookie.lifetime: "forever"`,
				"c.yaml:9: pools[0].session.absolute_timeout: 10ms is too short",
				`c.yaml:11: pools[0].hosts[0].address: "localhost:80" is not ip:port`,
				`c.yaml:12: pools[0].hosts[1].address: "127.0.0.1:0" is not ip:port`,
				`c.yaml:14: pools[0].hosts[2].weight: 0 is out of range`,
				`c.yaml:15: pools[0].hosts[2].name: "x y"`,
				"c.yaml:16: pools[0].hosts[3].address: 127.0.0.1:81 is listed twice",
				`c.yaml:17: pools[1].name: pool "a" is defined twice`,
				"c.yaml:18: pools[1].hosts: at least one host is needed",
			},
		},
		{name: "unknown field", yaml: "keys: {env: K}\npools:\n  - hosts:\n    - address: 127.0.0.1:1\n      wieght: 2\n",
			want: []string{"c.yaml:5: field wieght not found"}},
		{name: "wrong type", yaml: "keys: {env: K}\npools:\n  - hosts:\n    - address: 127.0.0.1:1\n      weight: heavy\n",
			want: []string{"c.yaml:5: cannot unmarshal"}},
		{name: "not yaml", yaml: "keys: [\n", want: []string{"c.yaml:"}},
		{name: "no pools, keys twice", yaml: "keys: {env: K, file: f}\n", want: []string{"keys: set file or env, not both", "pools: at least one pool"}},
		{name: "same_site none needs secure", yaml: "keys: {env: K}\npools:\n  - cookie: {same_site: none, secure: false}\n    hosts: [{address: '127.0.0.1:1'}]\n",
			want: []string{"c.yaml:3: pools[0].cookie.same_site: none needs secure"}},
		{name: "two pools need names", yaml: "keys: {env: K}\npools:\n  - hosts: [{address: '127.0.0.1:1'}]\n  - name: b\n    hosts: [{address: '127.0.0.1:2'}]\n",
			want: []string{"c.yaml:3: pools[0].name: a name is needed"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := ParseConfig("c.yaml", []byte(tt.yaml))
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

func TestLoadFileKeys(t *testing.T) {
	dir := t.TempDir()
	write := func(name, text string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(text), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	hosts := "pools:\n  - hosts: [{address: '127.0.0.1:1'}]\n"
	write("keys.txt", "k1:"+testSecret+"\n")
	write("short.txt", "k1:c2hvcnQ\n")
	env := map[string]string{"AFFINITY_KEYS": "k2:" + testSecret + ",k1:" + testSecret}
	getenv := func(k string) string { return env[k] }

	tests := []struct {
		name, config, wantSigner, wantErr string
	}{
		{"file relative to the config", "keys: {file: keys.txt}\n" + hosts, "k1", ""},
		{"environment", "keys: {env: AFFINITY_KEYS}\n" + hosts, "k2", ""},
		{"missing file", "keys: {file: nope.txt}\n" + hosts, "", "keys.file: open"},
		{"bad key file", "keys: {file: short.txt}\n" + hosts, "", "short.txt: line 1: key \"k1\": secret has 5 bytes"},
		{"unset variable", "keys: {env: UNSET}\n" + hosts, "", "environment variable UNSET is empty or unset"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			snap, err := LoadFile(write("c.yaml", tt.config), getenv, nil, t0)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got := snap.Codec.Keys().Signer(t0).ID; got != tt.wantSigner {
				t.Fatalf("signer %s, want %s", got, tt.wantSigner)
			}
		})
	}
}

func TestRedisConfig(t *testing.T) {
	const pools = "pools:\n  - session: {idle_timeout: 2m}\n    hosts: [{address: '127.0.0.1:1'}]\n"
	t.Run("defaults", func(t *testing.T) {
		cfg, err := ParseConfig("c.yaml", []byte("keys: {env: K}\nstore:\n  redis: {addresses: ['127.0.0.1:6379']}\n"+pools))
		if err != nil {
			t.Fatal(err)
		}
		r := cfg.Store.Redis
		// The touch interval follows the shortest idle timeout.
		if r.Mode != RedisSingle || r.KeyPrefix != DefaultRedisKeyPrefix || r.Timeout != DefaultRedisTimeout ||
			r.SyncInterval != DefaultRedisSyncInterval || r.TouchInterval != 30*time.Second {
			t.Fatalf("defaults: %+v", r)
		}
	})
	t.Run("without the block, no shared store", func(t *testing.T) {
		cfg, err := ParseConfig("c.yaml", []byte("keys: {env: K}\n"+pools))
		if err != nil || cfg.Store.Redis != nil {
			t.Fatalf("redis %+v, err %v", cfg.Store.Redis, err)
		}
	})
	errs := []struct {
		name, block string
		want        []string
	}{
		{"no address", "  redis: {}\n", []string{"c.yaml:3: store.redis.addresses: name the server"}},
		{"bad mode and address", "  redis:\n    mode: replica\n    addresses: [redis]\n",
			[]string{`c.yaml:4: store.redis.mode: "replica" is not one of`, `c.yaml:5: store.redis.addresses[0]: "redis" is not host:port`}},
		{"single with two addresses", "  redis: {addresses: ['a:1', 'b:1']}\n", []string{"store.redis.addresses: a single server has one address"}},
		{"sentinel without master", "  redis: {mode: sentinel, addresses: ['a:26379']}\n", []string{"store.redis.master_name: sentinel mode needs"}},
		{"cluster with a db", "  redis: {mode: cluster, addresses: ['a:1'], db: 2}\n", []string{"store.redis.db: must be 0"}},
		{"user twice", "  redis: {addresses: ['a:1'], username: u, username_file: f}\n", []string{"store.redis.username: set username or username_file"}},
		{"touch past idle", "  redis: {addresses: ['a:1'], touch_interval: 5m}\n", []string{"store.redis.touch_interval: 5m0s must be positive and at most half of pools[0]'s idle timeout (2m0s)"}},
		{"client cert without key", "  redis:\n    addresses: ['a:1']\n    tls: {cert_file: c.pem}\n", []string{"c.yaml:5: store.redis.tls: cert_file and key_file go together"}},
		{"inline password", "  redis: {addresses: ['a:1'], password: secret}\n", []string{"field password not found"}},
	}
	for _, tt := range errs {
		t.Run(tt.name, func(t *testing.T) {
			_, err := ParseConfig("c.yaml", []byte("keys: {env: K}\nstore:\n"+tt.block+pools))
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
	t.Run("files relative to the config", func(t *testing.T) {
		dir := t.TempDir()
		cfg := "keys: {env: K}\nstore:\n  redis:\n    addresses: ['127.0.0.1:1']\n    password_file: secrets/pw\n    tls: {ca_file: /etc/ca.pem}\n" + pools
		p := filepath.Join(dir, "c.yaml")
		if err := os.WriteFile(p, []byte(cfg), 0o600); err != nil {
			t.Fatal(err)
		}
		snap, err := LoadFile(p, func(string) string { return "k1:" + testSecret }, nil, t0)
		if err != nil {
			t.Fatal(err)
		}
		if r := snap.Redis; r.PasswordFile != filepath.Join(dir, "secrets/pw") || r.TLS.CAFile != "/etc/ca.pem" {
			t.Fatalf("paths: %+v %+v", r, r.TLS)
		}
	})
}

// FuzzParseConfig: any file is refused with an error or accepted and then
// built without a panic, and an accepted one is accepted again.
func FuzzParseConfig(f *testing.F) {
	f.Add([]byte(validConfig))
	f.Add([]byte("keys: {env: K}\nstore:\n  redis: {addresses: ['a:1']}\npools:\n  - hosts: [{address: '127.0.0.1:1'}]\n"))
	f.Add([]byte("keys: [\n"))
	f.Add([]byte("keys: {env: K}\npools:\n  - load: {envoy_admins: ['a:1', 'http://b:2'], interval: 200ms, factor: 1.5}\n    hosts: [{address: '127.0.0.1:1'}]\n"))
	f.Add([]byte("pools:\n  - key_sources: [{type: client_address, trusted_hops: -1}]\n    health: {passive: {max_down_percent: 900}}\n"))
	keys := testKeyring(f)
	f.Fuzz(func(t *testing.T, data []byte) {
		cfg, err := ParseConfig("f.yaml", data)
		if err != nil {
			if !strings.HasPrefix(err.Error(), "f.yaml") {
				t.Fatalf("error without the file's name: %v", err)
			}
			return
		}
		cfg.Build(keys)
		if _, err := ParseConfig("f.yaml", data); err != nil {
			t.Fatalf("accepted, then refused: %v", err)
		}
	})
}
