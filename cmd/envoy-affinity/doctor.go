package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/envoy-affinity/envoy-affinity/affinity"
	"github.com/envoy-affinity/envoy-affinity/envoy/doctor"
)

// errProblems makes the doctor exit non-zero when sessions would break.
var errProblems = errors.New("Envoy's configuration would break sessions")

// runDoctor checks an Envoy's configuration, live or from a file, against
// the service's config.
func runDoctor(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	var config, admin, file string
	var asJSON bool
	if help, err := subcommand("doctor", args, stderr, func(fs *flag.FlagSet) {
		fs.StringVar(&config, "config", "", "the service's configuration file")
		fs.StringVar(&admin, "envoy-admin", "", "a running Envoy's admin address (host:port): reads /config_dump and /clusters")
		fs.StringVar(&file, "envoy-yaml", "", "an Envoy bootstrap file to check instead of a running Envoy")
		fs.BoolVar(&asJSON, "json", false, "print the report as JSON")
	}); help || err != nil {
		return err
	}
	if (admin == "") == (file == "") {
		return fmt.Errorf("doctor: give one of -envoy-admin and -envoy-yaml")
	}
	snap, err := loadFor("doctor", config)
	if err != nil {
		return err
	}
	// A pool that follows DNS is compared with what the name resolves to
	// now (a pool reading Envoy has Envoy's hosts by construction).
	for _, p := range snap.Pools {
		if p.Source == nil || p.Source.Kind != affinity.SourceDNS {
			continue
		}
		hosts, err := source(*p.Source).Hosts(ctx)
		if err != nil {
			fmt.Fprintf(stderr, "doctor: pool %s: hosts not compared: %v\n", p.Name, err)
			continue
		}
		p.Specs = hosts
	}
	client := &http.Client{Timeout: 5 * time.Second}
	var envoy *doctor.Envoy
	if admin != "" {
		envoy, err = doctor.ReadAdmin(ctx, client, admin)
	} else {
		envoy, err = doctor.ReadYAML(file)
	}
	if err != nil {
		return fmt.Errorf("doctor: %w", err)
	}
	report := doctor.Check(ctx, envoy, doctor.Service{Pools: snap.Pools, Keys: snap.Codec.Keys(), Now: time.Now()}, client)
	if asJSON {
		err = report.WriteJSON(stdout)
	} else {
		err = report.WriteText(stdout)
	}
	if err != nil {
		return err
	}
	if report.Count(doctor.Error) > 0 {
		return errProblems
	}
	return nil
}

// envoyDoctor checks the co-located Envoy's configuration against the
// pools in force: on a timer, its findings in the metrics (an alert fires
// when someone edits Envoy's configuration wrongly), and on request
// (/debug/doctor). The Envoy is the one the first pools[].discovery.envoy
// names.
type envoyDoctor struct {
	engine  *affinity.Engine
	metrics *metrics
	log     *slog.Logger
	client  *http.Client

	mu   sync.Mutex
	last string // the last findings logged, so each change is logged once
}

// errNoEnvoy: no pool names an Envoy admin address.
var errNoEnvoy = errors.New("no pool reads its hosts from Envoy (pools[].discovery.envoy): there is no Envoy to check")

func newEnvoyDoctor(engine *affinity.Engine, met *metrics, log *slog.Logger) *envoyDoctor {
	return &envoyDoctor{engine: engine, metrics: met, log: log, client: &http.Client{Timeout: 5 * time.Second}}
}

// envoyAdmin is the admin address the first pool reading Envoy names.
func envoyAdmin(snap *affinity.Snapshot) string {
	for _, p := range snap.Pools {
		if p.Source != nil && p.Source.Kind == affinity.SourceEnvoy {
			return p.Source.Envoy.Admin
		}
	}
	return ""
}

// check reads Envoy's configuration and checks it now.
func (d *envoyDoctor) check(ctx context.Context) (*doctor.Report, error) {
	snap := d.engine.Snapshot()
	admin := envoyAdmin(snap)
	if admin == "" {
		return nil, errNoEnvoy
	}
	e, err := doctor.ReadAdmin(ctx, d.client, admin)
	if err != nil {
		d.metrics.envoyChecks.WithLabelValues("unreachable").Inc()
		return nil, err
	}
	r := doctor.Check(ctx, e, doctor.Service{Pools: snap.Pools, Keys: snap.Codec.Keys(), Now: d.engine.Now()}, d.client)
	d.metrics.envoyChecks.WithLabelValues("checked").Inc()
	for _, s := range doctor.Severities() {
		d.metrics.envoyProblems.WithLabelValues(string(s)).Set(float64(r.Count(s)))
	}
	d.logChanges(r)
	return r, nil
}

// logChanges logs the findings when they differ from the last logged.
func (d *envoyDoctor) logChanges(r *doctor.Report) {
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

// run checks at each interval until ctx is done (only while a pool reads
// its hosts from Envoy).
func (d *envoyDoctor) run(ctx context.Context, interval time.Duration) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		if _, err := d.check(ctx); err != nil && !errors.Is(err, errNoEnvoy) && ctx.Err() == nil {
			d.log.Debug("Envoy's configuration not checked", "err", err)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// serveHTTP is GET /debug/doctor: a check now, as JSON.
func (d *envoyDoctor) serveHTTP(w http.ResponseWriter, r *http.Request) {
	report, err := d.check(r.Context())
	switch {
	case errors.Is(err, errNoEnvoy):
		writeJSON(w, http.StatusNotFound, map[string]string{"error": err.Error()})
	case err != nil:
		writeJSON(w, http.StatusBadGateway, map[string]string{"error": "reading Envoy's configuration: " + err.Error()})
	default:
		if report.Problems == nil {
			report.Problems = []doctor.Problem{}
		}
		writeJSON(w, http.StatusOK, report)
	}
}
