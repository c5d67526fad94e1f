package main

import (
	"os"
	"strings"
	"testing"

	"github.com/envoy-affinity/envoy-affinity/internal/launch"
)

// TestTestedEnvoyMatchesMakefile keeps the version the binary reports equal to
// the one the Makefile fetches and internal/launch expects.
func TestTestedEnvoyMatchesMakefile(t *testing.T) {
	mk, err := os.ReadFile("../../Makefile")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(mk), "ENVOY_VERSION := "+testedEnvoy+"\n") {
		t.Fatalf("the Makefile's ENVOY_VERSION is not %s", testedEnvoy)
	}
	if launch.EnvoyVersion != testedEnvoy {
		t.Fatalf("internal/launch expects Envoy %s, the binary says %s", launch.EnvoyVersion, testedEnvoy)
	}
}
