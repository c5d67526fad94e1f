// Command envoy-affinity is the session-affinity ext_proc server for Envoy.
//
// This package is the command line only: run.go parses the serve flags into
// a service.Config (internal/service runs the server), commands.go,
// doctor.go and envoyconfig.go are the subcommands check, keygen, jwks,
// doctor and envoy-config, and version.go the version command.
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := Run(ctx, os.Args[1:], os.Stdout, os.Stderr); err != nil {
		fmt.Fprintln(os.Stderr, "envoy-affinity:", err)
		os.Exit(1)
	}
}
