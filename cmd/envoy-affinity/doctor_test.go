package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"path/filepath"
	"strings"
	"testing"

	"github.com/envoy-affinity/envoy-affinity/internal/testkit"
)

// TestDoctorResolvesDNSPools: the doctor compares a DNS pool's hosts, as
// the name resolves now, with Envoy's cluster members.
func TestDoctorResolvesDNSPools(t *testing.T) {
	dns := testkit.NewDNSServer(t)
	dns.SetA("127.0.0.1", "127.0.0.9")
	dir := t.TempDir()
	cfg := filepath.Join(dir, "config.yaml")
	writeFile(t, filepath.Join(dir, "keys.txt"), testKey+"\n")
	writeFile(t, cfg, fmt.Sprintf("keys: {file: keys.txt}\npools:\n  - discovery:\n      dns: {name: web.test., port: 8081, server: '%s'}\n", dns.Addr()))
	var out strings.Builder
	err := Run(context.Background(), []string{"doctor", "-config", cfg, "-envoy-yaml", filepath.Join("..", "..", "envoy", "verified.yaml")}, &out, io.Discard)
	if !errors.Is(err, errProblems) {
		t.Fatalf("doctor: %v\n%s", err, out.String())
	}
	for _, want := range []string{
		"error hosts.missing: pool default, cluster \"app\": the pool's host 127.0.0.9:8081 is not a member",
		"warning hosts.extra: pool default, cluster \"app\": Envoy's member 127.0.0.1:8082 is not one of the pool's hosts",
	} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("no %q in:\n%s", want, out.String())
		}
	}
	if strings.Contains(out.String(), "127.0.0.1:8081 is not") {
		t.Errorf("the resolved host Envoy has is reported:\n%s", out.String())
	}
}
