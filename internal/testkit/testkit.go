// Package testkit holds what the service's tests share: a signing key,
// configuration files written the way an operator's tools replace them,
// a log buffer the server and the test share, free addresses, waiting for
// a condition, a decision engine of a configuration text, TLS certificates
// and their files, and a loopback DNS server.
// Only tests import it.
package testkit

import (
	"bytes"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/envoy-affinity/envoy-affinity/affinity"
)

// Key is a keys-file line: an HS256 key with id k1.
const Key = "k1:MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY"

// WriteFile replaces path's content with text in one rename, as a
// Kubernetes volume or an editor does.
func WriteFile(t testing.TB, path, text string) {
	t.Helper()
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
}

// Config is a configuration of one unnamed pool of hosts whose keys are in
// keys.txt beside it.
func Config(hosts ...string) string {
	var b strings.Builder
	b.WriteString("keys: {file: keys.txt}\npools:\n  - hosts:\n")
	for _, h := range hosts {
		fmt.Fprintf(&b, "      - {address: '%s'}\n", h)
	}
	return b.String()
}

// Eventually waits up to 10 seconds for cond to return nil, and fails t
// with its last error otherwise.
func Eventually(t testing.TB, cond func() error) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		err := cond()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatal(err)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// FreeAddr is a loopback address no one listens on now.
func FreeAddr(t testing.TB) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// SyncBuffer is a bytes.Buffer a server's logger and the test share.
type SyncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *SyncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *SyncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// NewEngine is a decision engine of the configuration text, loaded from a
// folder of the test's with its keys file (keys.txt) holding Key.
func NewEngine(t *testing.T, config string) *affinity.Engine {
	t.Helper()
	dir := t.TempDir()
	WriteFile(t, filepath.Join(dir, "keys.txt"), Key+"\n")
	WriteFile(t, filepath.Join(dir, "config.yaml"), config)
	snap, err := affinity.LoadFile(filepath.Join(dir, "config.yaml"), os.Getenv, nil, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	return affinity.NewEngine(snap, nil)
}
