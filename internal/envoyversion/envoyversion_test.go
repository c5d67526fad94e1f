package envoyversion

import (
	"os/exec"
	"strings"
	"testing"
)

// TestMakefileReadsTested keeps the Makefile's ENVOY_VERSION what it reads
// from Tested: a reworded constant must not leave make fetching nothing.
func TestMakefileReadsTested(t *testing.T) {
	out, err := exec.Command("make", "-s", "-C", "../..", "envoy-version").CombinedOutput()
	if err != nil {
		t.Fatalf("make envoy-version: %v\n%s", err, out)
	}
	if got := strings.TrimSpace(string(out)); got != Tested {
		t.Fatalf("the Makefile's ENVOY_VERSION is %q, want %q", got, Tested)
	}
}
