package envoydoctor

import (
	"context"
	"errors"
	"log/slog"
	"testing"

	"github.com/envoy-affinity/envoy-affinity/envoy/doctor"
	"github.com/envoy-affinity/envoy-affinity/internal/testkit"
)

// counts is an Observer that counts.
type counts struct{ examined, unreachable int }

func (c *counts) EnvoyExamined(*doctor.Report) { c.examined++ }
func (c *counts) EnvoyUnreachable()            { c.unreachable++ }

// TestExamine: without a pool reading Envoy there is nothing to examine;
// an Envoy that does not answer is told to the observer.
func TestExamine(t *testing.T) {
	var c counts
	d := New(testkit.NewEngine(t, testkit.Config("127.0.0.1:8081")), &c, slog.New(slog.DiscardHandler))
	if _, err := d.Examine(context.Background()); !errors.Is(err, ErrNoEnvoy) {
		t.Fatalf("without Envoy: %v", err)
	}
	closed := testkit.FreeAddr(t)
	d = New(testkit.NewEngine(t, "keys: {file: keys.txt}\npools:\n  - discovery:\n      envoy: {admin: '"+closed+"', cluster: app}\n"), &c, slog.New(slog.DiscardHandler))
	if _, err := d.Examine(context.Background()); err == nil || errors.Is(err, ErrNoEnvoy) {
		t.Fatalf("Envoy not answering: %v", err)
	}
	if c != (counts{unreachable: 1}) {
		t.Fatalf("observer told %+v", c)
	}
}
