// Package envoydoctor examines, from inside the running service, the
// configuration of the Envoy the pools read their hosts from against the
// pools in force: on a timer, its findings fed to an Observer (the metrics,
// so that an alert fires when someone edits Envoy's configuration wrongly)
// and logged when they change; and on request (the admin API's
// /debug/doctor). The Envoy is the one the first pools[].discovery.envoy
// names. The examination itself is package envoy/doctor's.
package envoydoctor

import (
	"context"
	"errors"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/envoy-affinity/envoy-affinity/affinity"
	"github.com/envoy-affinity/envoy-affinity/envoy/doctor"
)

// ErrNoEnvoy: no pool names an Envoy admin address.
var ErrNoEnvoy = errors.New("no pool reads its hosts from Envoy (pools[].discovery.envoy): there is no Envoy to check")

// Engine is what the doctor reads: the pools and keys in force, and the
// engine's clock.
type Engine interface {
	Snapshot() *affinity.Snapshot
	Now() time.Time
}

// Observer is told of each examination: its report, or that Envoy's admin
// API did not answer.
type Observer interface {
	EnvoyExamined(*doctor.Report)
	EnvoyUnreachable()
}

// Doctor examines the Envoy's configuration.
type Doctor struct {
	engine   Engine
	observer Observer
	log      *slog.Logger
	client   *http.Client

	mu   sync.Mutex
	last string // the last findings logged, so each change is logged once
}

// New is a doctor of the Envoy engine's pools name, telling observer.
func New(engine Engine, observer Observer, log *slog.Logger) *Doctor {
	return &Doctor{engine: engine, observer: observer, log: log, client: &http.Client{Timeout: 5 * time.Second}}
}

// envoyAdmin is the admin address the first pool reading Envoy names.
func envoyAdmin(snap *affinity.Snapshot) string {
	for _, p := range snap.Pools {
		if p.Discovery != nil && p.Discovery.Kind == affinity.DiscoveryEnvoy {
			return p.Discovery.Envoy.Admin
		}
	}
	return ""
}

// Examine reads Envoy's configuration and examines it now; ErrNoEnvoy when
// no pool names an Envoy.
func (d *Doctor) Examine(ctx context.Context) (*doctor.Report, error) {
	snap := d.engine.Snapshot()
	admin := envoyAdmin(snap)
	if admin == "" {
		return nil, ErrNoEnvoy
	}
	e, err := doctor.ReadAdmin(ctx, d.client, admin)
	if err != nil {
		d.observer.EnvoyUnreachable()
		return nil, err
	}
	r := doctor.Check(ctx, e, doctor.Service{Pools: snap.Pools, Keys: snap.Codec.Keys(), Now: d.engine.Now()}, d.client)
	d.observer.EnvoyExamined(r)
	d.logChanges(r)
	return r, nil
}

// logChanges logs the findings when they differ from the last logged.
func (d *Doctor) logChanges(r *doctor.Report) {
	var b strings.Builder
	_ = r.WriteText(&b)
	d.mu.Lock()
	defer d.mu.Unlock()
	if b.String() == d.last {
		return
	}
	d.last = b.String()
	for _, p := range r.Problems {
		level := slog.LevelWarn
		if p.Severity == doctor.Error {
			level = slog.LevelError
		}
		d.log.Log(context.Background(), level, "Envoy's configuration: "+p.Problem, "check", p.Check, "where", p.Where, "breaks", p.Breaks, "fix", p.Fix)
	}
	if len(r.Problems) == 0 {
		d.log.Info("Envoy's configuration agrees with the service's", "envoy", r.Envoy)
	}
}

// Run examines at each interval until ctx is done (only while a pool reads
// its hosts from Envoy).
func (d *Doctor) Run(ctx context.Context, interval time.Duration) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		if _, err := d.Examine(ctx); err != nil && !errors.Is(err, ErrNoEnvoy) && ctx.Err() == nil {
			d.log.Debug("Envoy's configuration not checked", "err", err)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}
