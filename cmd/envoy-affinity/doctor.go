package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"time"

	"github.com/envoy-affinity/envoy-affinity/affinity"
	"github.com/envoy-affinity/envoy-affinity/envoy/doctor"
	"github.com/envoy-affinity/envoy-affinity/internal/runner"
)

// errProblems makes the doctor exit non-zero when sessions would break.
var errProblems = errors.New("Envoy's configuration would break sessions")

// runDoctor examines an Envoy's configuration, live or from a file, against
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
		if p.Discovery == nil || p.Discovery.Kind != affinity.DiscoveryDNS {
			continue
		}
		hosts, err := runner.ListerFor(*p.Discovery).Hosts(ctx)
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
