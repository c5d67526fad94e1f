package envoydoctor

import (
	"context"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/envoy-affinity/envoy-affinity/affinity"
	"github.com/envoy-affinity/envoy-affinity/envoy/doctor"
	"github.com/envoy-affinity/envoy-affinity/internal/testkit"
)

// counts is an Observer that counts.
type counts struct{ examined, unreachable int }

func (c *counts) EnvoyExamined(*doctor.Report) { c.examined++ }
func (c *counts) EnvoyUnreachable()            { c.unreachable++ }

func engine(t *testing.T, config string) *affinity.Engine {
	t.Helper()
	dir := t.TempDir()
	testkit.WriteFile(t, filepath.Join(dir, "keys.txt"), testkit.Key+"\n")
	testkit.WriteFile(t, filepath.Join(dir, "config.yaml"), config)
	snap, err := affinity.LoadFile(filepath.Join(dir, "config.yaml"), os.Getenv, nil, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	return affinity.NewEngine(snap, nil)
}

// TestExamine: without a pool reading Envoy there is nothing to examine;
// an Envoy that does not answer is told to the observer.
func TestExamine(t *testing.T) {
	var c counts
	d := New(engine(t, testkit.Config("127.0.0.1:8081")), &c, slog.New(slog.DiscardHandler))
	if _, err := d.Examine(context.Background()); !errors.Is(err, ErrNoEnvoy) {
		t.Fatalf("without Envoy: %v", err)
	}
	closed := testkit.FreeAddr(t)
	d = New(engine(t, "keys: {file: keys.txt}\npools:\n  - discovery:\n      envoy: {admin: '"+closed+"', cluster: app}\n"), &c, slog.New(slog.DiscardHandler))
	if _, err := d.Examine(context.Background()); err == nil || errors.Is(err, ErrNoEnvoy) {
		t.Fatalf("Envoy not answering: %v", err)
	}
	if c != (counts{unreachable: 1}) {
		t.Fatalf("observer told %+v", c)
	}
}
