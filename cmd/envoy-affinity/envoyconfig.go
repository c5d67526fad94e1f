package main

import (
	"flag"
	"fmt"
	"io"

	"github.com/envoy-affinity/envoy-affinity/envoy/envoyconfig"
)

// envoyConfig prints what an Envoy the user already runs needs for one
// pool, generated from the configuration, so that nobody transcribes it.
func envoyConfig(args []string, stdout, stderr io.Writer) error {
	var config string
	var opts envoyconfig.Options
	if help, err := subcommand("envoy-config", args, stderr, func(fs *flag.FlagSet) {
		fs.StringVar(&config, "config", "", "the service's configuration file")
		fs.StringVar(&opts.Pool, "pool", "", "the pool (may be left out when there is one)")
		fs.StringVar(&opts.Cluster, "cluster", "", "the Envoy cluster of the pool's hosts (default: the pool's name; needed for a pool without a name)")
		fs.StringVar(&opts.GRPCAddress, "grpc-address", envoyconfig.DefaultGRPCAddress, "where Envoy reaches the service's gRPC listener, as `HOST:PORT` (serve's -grpc-addr)")
		fs.StringVar(&opts.AdminAddress, "admin-address", envoyconfig.DefaultAdminAddress, "where Envoy reaches the service's admin listener for the JWKS (verified mode), as `HOST:PORT` (serve's -admin-addr)")
	}); help || err != nil {
		return err
	}
	snap, err := loadFor("envoy-config", config)
	if err != nil {
		return err
	}
	opts.ConfigName = config
	out, err := envoyconfig.Pieces(snap, opts)
	if err != nil {
		return err
	}
	// Said where a user sees it, not only in the output's comments.
	if p, err := envoyconfig.ChoosePool(snap, opts.Pool); err == nil {
		if note := envoyconfig.ModeNote(p); note != "" {
			fmt.Fprintf(stderr, "envoy-config: pool %s: %s\n", p.Name, note)
		}
	}
	_, err = stdout.Write(out)
	return err
}
