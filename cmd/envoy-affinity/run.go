package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"time"

	"github.com/envoy-affinity/envoy-affinity/internal/envoyversion"
	"github.com/envoy-affinity/envoy-affinity/internal/service"
	"github.com/envoy-affinity/envoy-affinity/internal/tlsreload"
)

const usage = `envoy-affinity: session affinity for Envoy, as an ext_proc server.

Usage:
  envoy-affinity -config FILE [flags]   serve
  envoy-affinity check -config FILE     validate a config and its keys, then exit
  envoy-affinity keygen [-id ID] [-alg ed25519|hs256]
                                        print a new signing key line for the keys file
  envoy-affinity jwks -config FILE [-with-secrets] [-out FILE]
                                        write the JWKS Envoy's jwt_authn verifies tokens with
  envoy-affinity envoy-config -config FILE [-pool NAME] [-cluster NAME]
                 [-grpc-address HOST:PORT] [-admin-address HOST:PORT]
                                        print what to add to an Envoy you run, for a pool
  envoy-affinity doctor -config FILE (-envoy-admin HOST:PORT | -envoy-yaml FILE) [-json]
                                        check Envoy's configuration against the service's; exits 1 on errors
  envoy-affinity version                print the version and the Envoy version the tests use

Flags:
`

// Run is the whole program: it runs a subcommand, or parses the serve
// flags and serves until ctx is done.
func Run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) > 0 {
		switch args[0] {
		case "keygen":
			return keygen(args[1:], stdout, stderr)
		case "check":
			return check(args[1:], stdout, stderr)
		case "jwks":
			return jwks(args[1:], stdout, stderr)
		case "envoy-config":
			return envoyConfig(args[1:], stdout, stderr)
		case "doctor":
			return runDoctor(ctx, args[1:], stdout, stderr)
		case "version":
			_, err := fmt.Fprintf(stdout, "envoy-affinity %s (tested with Envoy %s)\n", version(), envoyversion.Tested)
			return err
		}
	}
	o, err := parseFlags(args, stderr)
	if err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil
		}
		return err
	}
	log, err := newLogger(o.logLevel, o.logFormat, stderr)
	if err != nil {
		return err
	}
	return service.Run(ctx, o.Config, log)
}

// serveFlags are the serve command's flags: the service's settings and
// the log's.
type serveFlags struct {
	service.Config
	logLevel, logFormat string
}

// tlsFiles are a listener's TLS files, labelled in errors by their flags.
func tlsFiles(cert, key, clientCA string) tlsreload.Files {
	return tlsreload.Files{Cert: tlsreload.File{Label: cert}, Key: tlsreload.File{Label: key}, ClientCA: tlsreload.File{Label: clientCA}}
}

func parseFlags(args []string, stderr io.Writer) (serveFlags, error) {
	o := serveFlags{Config: service.Config{
		GRPCTLS:  tlsFiles("-grpc-tls-cert", "-grpc-tls-key", "-grpc-client-ca"),
		AdminTLS: tlsFiles("-admin-tls-cert", "-admin-tls-key", ""),
	}}
	fs := flag.NewFlagSet("envoy-affinity", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprint(stderr, usage)
		fs.PrintDefaults()
	}
	fs.StringVar(&o.ConfigFile, "config", "", "configuration file (YAML); required")
	fs.StringVar(&o.GRPCAddr, "grpc-addr", "127.0.0.1:9002", "listen address of the ext_proc gRPC server")
	fs.StringVar(&o.AdminAddr, "admin-addr", "127.0.0.1:9003", "listen address of the admin HTTP server (health, debug); empty to disable")
	fs.DurationVar(&o.ReloadInterval, "reload-interval", 2*time.Second, "how often the config, keys and TLS files are checked for changes (SIGHUP reloads at once)")
	fs.DurationVar(&o.ShutdownGrace, "shutdown-grace", 10*time.Second, "how long open streams may take to finish on shutdown")
	fs.DurationVar(&o.ShutdownDelay, "shutdown-delay", 0, "on SIGTERM, keep serving this long while /readyz and gRPC health say NOT_SERVING, so Envoy's health check and Kubernetes take the replica out first")
	fs.StringVar(&o.logLevel, "log-level", "info", "log level: debug, info, warn, error")
	fs.StringVar(&o.logFormat, "log-format", "text", "log format: text or json")
	fs.StringVar(&o.AdminTokenFile, "admin-token-file", "", "file holding a bearer token the admin API requires (all but /healthz, /readyz and the JWKS); re-read when it changes")
	fs.BoolVar(&o.Pprof, "pprof", false, "serve Go's profiler at /debug/pprof/ on the admin listener")
	fs.StringVar(&o.GRPCTLS.Cert.Path, "grpc-tls-cert", "", "PEM certificate (chain) `file` of the gRPC listener; with -grpc-tls-key it speaks TLS 1.2 or later. Re-read when it changes")
	fs.StringVar(&o.GRPCTLS.Key.Path, "grpc-tls-key", "", "PEM private key `file` of -grpc-tls-cert")
	fs.StringVar(&o.GRPCTLS.ClientCA.Path, "grpc-client-ca", "", "PEM CA bundle `file`: gRPC clients must present a certificate it signed (mutual TLS); needs -grpc-tls-cert")
	fs.StringVar(&o.AdminTLS.Cert.Path, "admin-tls-cert", "", "PEM certificate (chain) `file` of the admin listener (JWKS, token, drains); with -admin-tls-key it speaks only TLS 1.2 or later. Re-read when it changes")
	fs.StringVar(&o.AdminTLS.Key.Path, "admin-tls-key", "", "PEM private key `file` of -admin-tls-cert")
	fs.BoolVar(&o.ExtAuthz, "ext-authz", false, "also answer Envoy's ext_authz Check on the gRPC listener: a measurement aid (docs/performance.md), not a supported transport")
	fs.DurationVar(&o.DoctorInterval, "doctor-interval", time.Minute, "how often the configuration of the Envoy that pools[].discovery.envoy names is checked against the service's (the envoy_config metrics, /debug/doctor); 0 to check only on request")
	if err := fs.Parse(args); err != nil {
		return o, err
	}
	var errs []error
	if o.ConfigFile == "" {
		errs = append(errs, errors.New("-config is required"))
	}
	if fs.NArg() > 0 {
		errs = append(errs, fmt.Errorf("unexpected arguments: %s", strings.Join(fs.Args(), " ")))
	}
	if o.ReloadInterval <= 0 {
		errs = append(errs, errors.New("-reload-interval must be positive"))
	}
	if o.ShutdownGrace < 0 {
		errs = append(errs, errors.New("-shutdown-grace must not be negative"))
	}
	if o.DoctorInterval < 0 {
		errs = append(errs, errors.New("-doctor-interval must not be negative"))
	}
	if o.ShutdownDelay < 0 {
		errs = append(errs, errors.New("-shutdown-delay must not be negative"))
	}
	if (o.GRPCTLS.Cert.Path == "") != (o.GRPCTLS.Key.Path == "") {
		errs = append(errs, errors.New("-grpc-tls-cert and -grpc-tls-key go together"))
	}
	if (o.AdminTLS.Cert.Path == "") != (o.AdminTLS.Key.Path == "") {
		errs = append(errs, errors.New("-admin-tls-cert and -admin-tls-key go together"))
	}
	if o.GRPCTLS.ClientCA.Path != "" && o.GRPCTLS.Cert.Path == "" {
		errs = append(errs, errors.New("-grpc-client-ca needs -grpc-tls-cert and -grpc-tls-key"))
	}
	return o, errors.Join(errs...)
}

func newLogger(level, format string, w io.Writer) (*slog.Logger, error) {
	var lv slog.Level
	if err := lv.UnmarshalText([]byte(level)); err != nil {
		return nil, fmt.Errorf("-log-level %q: use debug, info, warn or error", level)
	}
	hopts := &slog.HandlerOptions{Level: lv}
	switch format {
	case "text":
		return slog.New(slog.NewTextHandler(w, hopts)), nil
	case "json":
		return slog.New(slog.NewJSONHandler(w, hopts)), nil
	}
	return nil, fmt.Errorf("-log-format %q: use text or json", format)
}
