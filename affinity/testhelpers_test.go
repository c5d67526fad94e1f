package affinity

import (
	"fmt"
	"strings"
	"testing"
	"time"
)

// testSecret is 32 bytes, base64url.
const testSecret = "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY"

func testKeyring(t testing.TB, lines ...string) *Keyring {
	t.Helper()
	if len(lines) == 0 {
		lines = []string{"k1:" + testSecret}
	}
	ring, err := ParseKeyring(strings.Join(lines, "\n"))
	if err != nil {
		t.Fatal(err)
	}
	return ring
}

func hostsN(n int) []Host {
	hs := make([]Host, n)
	for i := range hs {
		hs[i] = NewHost("", fmt.Sprintf("10.0.%d.%d:8080", i/250, i%250+1), 1)
	}
	return hs
}

// fixedClock is a clock tests move by hand.
type fixedClock struct{ t time.Time }

func (c *fixedClock) now() time.Time { return c.t }

// mustBuild parses and builds a configuration with the test keys.
func mustBuild(t testing.TB, yaml string) *Snapshot {
	t.Helper()
	cfg, err := ParseConfig("t.yaml", []byte(yaml))
	if err != nil {
		t.Fatal(err)
	}
	return cfg.Build(testKeyring(t))
}
