package main

import (
	"bytes"
	"context"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"gopkg.in/yaml.v3"
)

// TestEnvoyConfig runs the envoy-config subcommand on configurations of
// each mode, with a named and an unnamed pool: its output is one YAML
// document of the pieces the mode needs, carrying the configuration's
// cookie name, refresh interval and pool name.
func TestEnvoyConfig(t *testing.T) {
	dir := t.TempDir()
	writeFile(t, filepath.Join(dir, "keys.txt"), "k1:ed25519:ZWQyNTUxOS1zZWVkLWZvci10ZXN0cy0wMTIzNDU2Nzg\n")
	pool := func(name, mode string) string {
		path := filepath.Join(dir, mode+"-"+name+".yaml")
		text := "keys: {file: keys.txt}\npools:\n  - mode: " + mode + "\n    cookie: {name: sid_" + mode + "}\n    session: {refresh_interval: 45s}\n    hosts: [{address: '127.0.0.1:8081'}]\n"
		if name != "" {
			text += "    name: " + name + "\n"
		}
		writeFile(t, path, text)
		return path
	}
	tests := []struct {
		name, mode, pool string
		args             []string
		want             []string
	}{
		{"verified, unnamed", "verified", "", []string{"-cluster", "web"},
			[]string{`from_cookies: ["sid_verified"]`, `audiences: ["default"]`, "max_lifetime: 47s", `cluster: "web"`, `cookie: {name: "sid_verified"}`, "name: established", "name: decide", "envoy_affinity_admin"}},
		{"verified, named", "verified", "shop", []string{"-admin-address", "10.1.2.3:9100"},
			[]string{`audiences: ["shop"]`, `cluster: "shop"`, "max_lifetime: 47s", `uri: "http://10.1.2.3:9100/.well-known/jwks.json"`, `address: "10.1.2.3", port_value: 9100`}},
		{"opaque, unnamed", "opaque", "", []string{"-cluster", "web", "-grpc-address", "10.1.2.3:9200"},
			[]string{`cookie: {name: "sid_opaque"}`, "name: affinity-failover", "%CEL(", `address: "10.1.2.3", port_value: 9200`}},
		{"opaque, named", "opaque", "shop", nil, []string{`cluster: "shop"`, `name: "shop"`}},
		{"native, unnamed", "native", "", []string{"-cluster", "web"},
			[]string{`cookie: {name: "sid_native", path: "/"}`, `safe_regex: {regex: "(.*;\\s*)?sid_native=.*"}`, `cookie: {name: "sid_native"}`}},
		{"native, named", "native", "shop", []string{"-pool", "shop"}, []string{`cluster: "shop"`}},
	}
	pieces := map[string][]string{
		"verified": {"http_connection_manager", "http_filters", "routes", "cluster", "clusters"},
		"opaque":   {"http_filters", "routes", "cluster", "clusters"},
		"native":   {"http_filters", "routes", "cluster", "clusters"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var out, errs bytes.Buffer
			args := append([]string{"envoy-config", "-config", pool(tt.pool, tt.mode)}, tt.args...)
			if err := Run(context.Background(), args, &out, &errs); err != nil {
				t.Fatalf("%v\n%s", err, errs.String())
			}
			var doc map[string]any
			if err := yaml.Unmarshal(out.Bytes(), &doc); err != nil {
				t.Fatalf("not YAML: %v\n%s", err, out.String())
			}
			var keys []string
			for k := range doc {
				keys = append(keys, k)
			}
			if want := pieces[tt.mode]; !slices.Equal(slices.Sorted(slices.Values(keys)), slices.Sorted(slices.Values(want))) {
				t.Errorf("top-level keys %v, want %v", keys, want)
			}
			for _, w := range tt.want {
				if !strings.Contains(out.String(), w) {
					t.Errorf("output lacks %s", w)
				}
			}
			if t.Failed() {
				t.Logf("output:\n%s", out.String())
			}
		})
	}
}

// TestEnvoyConfigKeyedPools: a pool keyed by a header gets the pieces of
// the mode that fits it, with no jwt_authn and nothing of the cookie; in
// verified mode, which has nothing to verify there, standard error says
// that opaque mode's pieces were printed.
func TestEnvoyConfigKeyedPools(t *testing.T) {
	dir := t.TempDir()
	writeFile(t, filepath.Join(dir, "keys.txt"), testKey+"\n")
	for _, mode := range []string{"verified", "opaque"} {
		t.Run(mode, func(t *testing.T) {
			path := filepath.Join(dir, mode+".yaml")
			writeFile(t, path, "keys: {file: keys.txt}\npools:\n  - {name: app, mode: "+mode+", key_sources: [{type: header, name: x-session-id}], hosts: [{address: '127.0.0.1:1'}]}\n")
			var out, errs bytes.Buffer
			if err := Run(context.Background(), []string{"envoy-config", "-config", path}, &out, &errs); err != nil {
				t.Fatal(err)
			}
			for _, w := range []string{"(mode " + mode + ")", "envoy/opaque.yaml is the same set-up", `- header: {header_name: "x-session-id"}`, "response_attributes: [xds.cluster_name]\n", "name: affinity-failover"} {
				if !strings.Contains(out.String(), w) {
					t.Errorf("output lacks %s", w)
				}
			}
			for _, n := range []string{"envoy.filters.http.jwt_authn", "envoy_affinity_admin", `"affinity"`, "request.headers['cookie']"} {
				if strings.Contains(out.String(), n) {
					t.Errorf("output has %s", n)
				}
			}
			if note := strings.Contains(errs.String(), "envoy-config: pool app: mode verified has Envoy verify session tokens"); note != (mode == "verified") {
				t.Errorf("standard error %q", errs.String())
			}
		})
	}
}

func TestEnvoyConfigRefuses(t *testing.T) {
	dir := t.TempDir()
	writeFile(t, filepath.Join(dir, "keys.txt"), testKey+"\n")
	header := filepath.Join(dir, "header.yaml")
	writeFile(t, header, "keys: {file: keys.txt}\npools:\n  - {name: app, mode: opaque, output: {header: x-affinity-destination}, hosts: [{address: '127.0.0.1:1'}]}\n")
	tests := []struct {
		name string
		args []string
		want string
	}{
		{"no config", nil, "envoy-config: -config is required"},
		{"unknown pool", []string{"-config", header, "-pool", "shop"}, `no pool "shop"`},
		{"a pool that writes headers", []string{"-config", header}, "pools[].output"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var out bytes.Buffer
			err := Run(context.Background(), append([]string{"envoy-config"}, tt.args...), &out, &out)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("error %v, want %q", err, tt.want)
			}
			if out.Len() != 0 {
				t.Errorf("printed %q on error", out.String())
			}
		})
	}
}
