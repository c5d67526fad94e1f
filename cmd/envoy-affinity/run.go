package main

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"reflect"
	"runtime/debug"
	"strings"
	"syscall"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/envoy-affinity/envoy-affinity/affinity"
	"github.com/envoy-affinity/envoy-affinity/affinity/redisstore"
	"github.com/envoy-affinity/envoy-affinity/extproc"
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

// testedEnvoy is the Envoy release the end-to-end tests run (Makefile's
// ENVOY_VERSION; a test keeps them equal).
const testedEnvoy = "1.40.0"

// version is the module version the binary was built from, or the VCS
// revision of a development build.
func version() string {
	info, ok := debug.ReadBuildInfo()
	if !ok {
		return "unknown"
	}
	if v := info.Main.Version; v != "" && v != "(devel)" {
		return v
	}
	rev, dirty := "", false
	for _, s := range info.Settings {
		switch s.Key {
		case "vcs.revision":
			rev = s.Value
		case "vcs.modified":
			dirty = s.Value == "true"
		}
	}
	if rev == "" {
		return "devel"
	}
	if len(rev) > 12 {
		rev = rev[:12]
	}
	if dirty {
		rev += "+dirty"
	}
	return "devel-" + rev
}

// options are the serve command's flags.
type options struct {
	config         string
	grpcAddr       string
	adminAddr      string
	reloadInterval time.Duration
	shutdownGrace  time.Duration
	shutdownDelay  time.Duration
	logLevel       string
	logFormat      string
	adminTokenFile string
	pprof          bool
	tlsCert        string
	tlsKey         string
	clientCA       string
	adminTLSCert   string
	adminTLSKey    string
	doctorInterval time.Duration
	extAuthz       bool
}

// Run is the whole program: it parses args, then serves until ctx is done.
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
			_, err := fmt.Fprintf(stdout, "envoy-affinity %s (tested with Envoy %s)\n", version(), testedEnvoy)
			return err
		}
	}
	opts, err := parseFlags(args, stderr)
	if err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil
		}
		return err
	}
	log, err := newLogger(opts.logLevel, opts.logFormat, stderr)
	if err != nil {
		return err
	}
	return serve(ctx, opts, log)
}

func parseFlags(args []string, stderr io.Writer) (options, error) {
	var o options
	fs := flag.NewFlagSet("envoy-affinity", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprint(stderr, usage)
		fs.PrintDefaults()
	}
	fs.StringVar(&o.config, "config", "", "configuration file (YAML); required")
	fs.StringVar(&o.grpcAddr, "grpc-addr", "127.0.0.1:9002", "listen address of the ext_proc gRPC server")
	fs.StringVar(&o.adminAddr, "admin-addr", "127.0.0.1:9003", "listen address of the admin HTTP server (health, debug); empty to disable")
	fs.DurationVar(&o.reloadInterval, "reload-interval", 2*time.Second, "how often the config, keys and TLS files are checked for changes (SIGHUP reloads at once)")
	fs.DurationVar(&o.shutdownGrace, "shutdown-grace", 10*time.Second, "how long open streams may take to finish on shutdown")
	fs.DurationVar(&o.shutdownDelay, "shutdown-delay", 0, "on SIGTERM, keep serving this long while /readyz and gRPC health say NOT_SERVING, so Envoy's health check and Kubernetes take the replica out first")
	fs.StringVar(&o.logLevel, "log-level", "info", "log level: debug, info, warn, error")
	fs.StringVar(&o.logFormat, "log-format", "text", "log format: text or json")
	fs.StringVar(&o.adminTokenFile, "admin-token-file", "", "file holding a bearer token the admin API requires (all but /healthz, /readyz and the JWKS); re-read when it changes")
	fs.BoolVar(&o.pprof, "pprof", false, "serve Go's profiler at /debug/pprof/ on the admin listener")
	fs.StringVar(&o.tlsCert, "grpc-tls-cert", "", "PEM certificate (chain) `file` of the gRPC listener; with -grpc-tls-key it speaks TLS 1.2 or later. Re-read when it changes")
	fs.StringVar(&o.tlsKey, "grpc-tls-key", "", "PEM private key `file` of -grpc-tls-cert")
	fs.StringVar(&o.clientCA, "grpc-client-ca", "", "PEM CA bundle `file`: gRPC clients must present a certificate it signed (mutual TLS); needs -grpc-tls-cert")
	fs.StringVar(&o.adminTLSCert, "admin-tls-cert", "", "PEM certificate (chain) `file` of the admin listener (JWKS, token, drains); with -admin-tls-key it speaks only TLS 1.2 or later. Re-read when it changes")
	fs.StringVar(&o.adminTLSKey, "admin-tls-key", "", "PEM private key `file` of -admin-tls-cert")
	fs.BoolVar(&o.extAuthz, "ext-authz", false, "also answer Envoy's ext_authz Check on the gRPC listener: a measurement aid (docs/performance.md), not a supported transport")
	fs.DurationVar(&o.doctorInterval, "doctor-interval", time.Minute, "how often the configuration of the Envoy that pools[].discovery.envoy names is checked against the service's (the envoy_config metrics, /debug/doctor); 0 to check only on request")
	if err := fs.Parse(args); err != nil {
		return o, err
	}
	var errs []error
	if o.config == "" {
		errs = append(errs, errors.New("-config is required"))
	}
	if fs.NArg() > 0 {
		errs = append(errs, fmt.Errorf("unexpected arguments: %s", strings.Join(fs.Args(), " ")))
	}
	if o.reloadInterval <= 0 {
		errs = append(errs, errors.New("-reload-interval must be positive"))
	}
	if o.shutdownGrace < 0 {
		errs = append(errs, errors.New("-shutdown-grace must not be negative"))
	}
	if o.doctorInterval < 0 {
		errs = append(errs, errors.New("-doctor-interval must not be negative"))
	}
	if o.shutdownDelay < 0 {
		errs = append(errs, errors.New("-shutdown-delay must not be negative"))
	}
	if (o.tlsCert == "") != (o.tlsKey == "") {
		errs = append(errs, errors.New("-grpc-tls-cert and -grpc-tls-key go together"))
	}
	if (o.adminTLSCert == "") != (o.adminTLSKey == "") {
		errs = append(errs, errors.New("-admin-tls-cert and -admin-tls-key go together"))
	}
	if o.clientCA != "" && o.tlsCert == "" {
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

func serve(ctx context.Context, o options, log *slog.Logger) error {
	reload := newReloader(o.config, log)
	token, err := newBearerToken(o.adminTokenFile, log)
	if err != nil {
		return err
	}
	snap, err := affinity.LoadFile(o.config, os.Getenv, nil, time.Now())
	if err != nil {
		return err
	}
	engine := affinity.NewEngine(snap, nil)
	engine.OnChange(logHostChanges(log))
	var shared *redisstore.Store
	if snap.Redis != nil {
		local := affinity.NewMemoryStore(snap.MaxSessions, snap.IdleTimeout())
		if shared, err = redisstore.New(*snap.Redis, local, snap.IdleTimeout(), redisstore.Options{Logger: log.With("store", "redis")}); err != nil {
			return err
		}
		engine.SetStore(shared)
		// Before serving: a new replica answers like the others from its
		// first request when Redis answers.
		shared.Start(engine)
		defer shared.Close()
		log.Info("shared store", "redis", strings.Join(snap.Redis.Addresses, ","), "mode", snap.Redis.Mode, "replica", shared.Replica(), "shared", shared.Shared())
	}
	reload.engine = engine
	reload.keysMode = keysFileMode{log: log}
	reload.keysMode.check(snap.KeysFile)
	logSnapshot(log, "config loaded", snap)
	certs, err := newServerTLS(o, log)
	if err != nil {
		return err
	}
	reload.certs = certs
	adminCerts, err := newAdminTLS(o, log)
	if err != nil {
		return err
	}
	reload.adminCerts = adminCerts

	grpcLn, err := net.Listen("tcp", o.grpcAddr)
	if err != nil {
		return err
	}
	var adminLn net.Listener
	if o.adminAddr != "" {
		if adminLn, err = net.Listen("tcp", o.adminAddr); err != nil {
			grpcLn.Close()
			return err
		}
	}

	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	disc := newDiscoveries(ctx, engine, log)
	met := newMetrics(engine, disc, shared, certs, adminCerts)
	reload.metrics = met

	healthSrv := health.NewServer()
	grpcSrv := grpc.NewServer(append(extproc.ServerOptions(), certs.serverOptions()...)...)
	xp := extproc.NewServer(engine, log)
	xp.Observe(met)
	extprocv3.RegisterExternalProcessorServer(grpcSrv, xp)
	if o.extAuthz {
		authz := extproc.NewAuthzServer(engine)
		authz.Observe(met)
		authv3.RegisterAuthorizationServer(grpcSrv, authz)
	}
	healthpb.RegisterHealthServer(grpcSrv, healthSrv)

	disc.reconcile(snap)
	checks := newCheckers(ctx, engine, log)
	checks.reconcile(snap)
	reload.onUpdate = func(s *affinity.Snapshot) {
		disc.reconcile(s)
		checks.reconcile(s)
		if !reflect.DeepEqual(s.Redis, snap.Redis) {
			log.Warn("store.redis changed: the change takes effect at the next start; the store in force stays")
		}
	}
	doc := newEnvoyDoctor(engine, met, log)
	state := &serverState{engine: engine, discoveries: disc, metrics: met, log: log, shared: shared, doctor: doc}
	doctorDone := make(chan struct{})
	go func() {
		defer close(doctorDone)
		if o.doctorInterval > 0 {
			doc.run(ctx, o.doctorInterval)
		}
	}()
	errc := make(chan error, 3)
	if certs.mode() != "mutual TLS" && !isLoopback(grpcLn.Addr()) {
		// Any client that reaches the port can pose as Envoy: ask for
		// decisions (host addresses opaque mode hides), report responses
		// that hold hosts down or teach application-cookie bindings.
		log.Warn("the ext_proc gRPC listener listens beyond loopback without client authentication: let only Envoy reach it (a NetworkPolicy) or require its certificate (-grpc-client-ca)",
			"grpc", grpcLn.Addr().String(), "grpc_security", certs.mode())
	}
	go func() { errc <- grpcSrv.Serve(grpcLn) }()
	var adminSrv *http.Server
	if adminLn != nil {
		if token == nil && !isLoopback(adminLn.Addr()) {
			log.Warn("the admin API (drain, explain, metrics) listens beyond loopback without -admin-token-file", "admin", adminLn.Addr().String())
		}
		adminSrv = newAdminServer(adminHandler(state, token, o.pprof))
		go func() { errc <- adminSrv.Serve(adminCerts.listen(adminLn)) }()
	}
	// SIGHUP is caught before anything reports ready, so a reload request
	// never meets the default action (exit).
	hup := hangups(ctx)
	reloadDone := make(chan struct{})
	go func() {
		defer close(reloadDone)
		reload.run(ctx, o.reloadInterval, hup)
	}()
	log.Info("serving", "grpc", grpcLn.Addr().String(), "grpc_security", certs.mode(), "admin", addrOf(adminLn), "admin_security", adminCerts.mode())

	var serveErr error
	select {
	case <-ctx.Done():
	case serveErr = <-errc:
	}
	// Shutdown: say we are going, give health checkers time to notice, then
	// stop taking streams and let open ones finish.
	state.shuttingDown.Store(true)
	healthSrv.Shutdown()
	if o.shutdownDelay > 0 && serveErr == nil {
		log.Info("shutting down: not ready, still serving", "for", o.shutdownDelay.String())
		time.Sleep(o.shutdownDelay)
	}
	cancel()
	stopped := make(chan struct{})
	go func() { grpcSrv.GracefulStop(); close(stopped) }()
	select {
	case <-stopped:
	case <-time.After(o.shutdownGrace):
		grpcSrv.Stop()
		<-stopped
	}
	if adminSrv != nil {
		sctx, scancel := context.WithTimeout(context.Background(), time.Second)
		_ = adminSrv.Shutdown(sctx)
		scancel()
	}
	<-reloadDone
	<-doctorDone
	disc.wait()
	checks.wait()
	log.Info("stopped")
	if serveErr != nil && !errors.Is(serveErr, http.ErrServerClosed) && !errors.Is(serveErr, grpc.ErrServerStopped) {
		return serveErr
	}
	return nil
}

// hangups delivers SIGHUP until ctx is done.
func hangups(ctx context.Context) <-chan os.Signal {
	ch := make(chan os.Signal, 1)
	signal.Notify(ch, syscall.SIGHUP)
	go func() {
		<-ctx.Done()
		signal.Stop(ch)
	}()
	return ch
}

func isLoopback(a net.Addr) bool {
	tcp, ok := a.(*net.TCPAddr)
	return ok && tcp.IP.IsLoopback()
}

func addrOf(ln net.Listener) string {
	if ln == nil {
		return ""
	}
	return ln.Addr().String()
}

func logSnapshot(log *slog.Logger, msg string, s *affinity.Snapshot) {
	for _, p := range s.Pools {
		ids := make([]string, 0, p.Hosts.Len())
		for _, h := range p.Hosts.Hosts() {
			ids = append(ids, h.ID+"="+h.Address)
		}
		log.Info(msg, "pool", p.Name, "hosts", strings.Join(ids, " "), "signing_key", s.Codec.Keys().Signer(time.Now()).ID, "keys", strings.Join(s.Codec.Keys().IDs(), ","))
	}
}

// subcommand parses a subcommand's flags, defined by define. A request for
// help prints the flags and reports help = true (not an error).
func subcommand(name string, args []string, stderr io.Writer, define func(*flag.FlagSet)) (help bool, err error) {
	fs := flag.NewFlagSet("envoy-affinity "+name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	define(fs)
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return true, nil
		}
		return false, err
	}
	return false, nil
}

// loadFor loads the configuration a subcommand's -config names.
func loadFor(cmd, config string) (*affinity.Snapshot, error) {
	if config == "" {
		return nil, fmt.Errorf("%s: -config is required", cmd)
	}
	return affinity.LoadFile(config, os.Getenv, nil, time.Now())
}

func check(args []string, stdout, stderr io.Writer) error {
	var config string
	if help, err := subcommand("check", args, stderr, func(fs *flag.FlagSet) {
		fs.StringVar(&config, "config", "", "configuration file to validate")
	}); help || err != nil {
		return err
	}
	snap, err := loadFor("check", config)
	if err != nil {
		return err
	}
	for _, p := range snap.Pools {
		fmt.Fprintf(stdout, "pool %s: mode %s, %d hosts, cookie %s\n", p.Name, p.Mode, p.Hosts.Len(), p.Cookie.Name)
	}
	if r := snap.Redis; r != nil {
		// Reads the credential and TLS files; connects to nothing.
		if _, err := redisstore.New(*r, affinity.NewMemoryStore(1, time.Second), time.Second, redisstore.Options{}); err != nil {
			return fmt.Errorf("%s: %w", config, err)
		}
		fmt.Fprintf(stdout, "store: redis %s %s, key prefix %q\n", r.Mode, strings.Join(r.Addresses, ","), r.KeyPrefix)
	}
	fmt.Fprintf(stdout, "%s: ok\n", config)
	return nil
}

func keygen(args []string, stdout, stderr io.Writer) error {
	var id, alg string
	if help, err := subcommand("keygen", args, stderr, func(fs *flag.FlagSet) {
		fs.StringVar(&id, "id", "", "key id (default: k followed by today's date)")
		fs.StringVar(&alg, "alg", "ed25519", "ed25519 (Envoy needs only the public key) or hs256 (a shared secret)")
	}); help || err != nil {
		return err
	}
	if id == "" {
		id = "k" + time.Now().UTC().Format("20060102")
	}
	secret := make([]byte, 32) // an Ed25519 seed, or an HS256 key of the hash size
	_, _ = rand.Read(secret)
	line := id + ":" + strings.ToLower(alg) + ":" + base64.RawURLEncoding.EncodeToString(secret)
	if _, err := affinity.ParseKeyring(line); err != nil {
		return err
	}
	_, err := fmt.Fprintln(stdout, line)
	return err
}

// jwks writes the key set Envoy's jwt_authn verifies session tokens with.
func jwks(args []string, stdout, stderr io.Writer) error {
	var config, out string
	var withSecrets bool
	if help, err := subcommand("jwks", args, stderr, func(fs *flag.FlagSet) {
		fs.StringVar(&config, "config", "", "configuration file whose keys to publish")
		fs.BoolVar(&withSecrets, "with-secrets", false, "include HS256 secrets (for a local_jwks file only Envoy can read; never serve them)")
		fs.StringVar(&out, "out", "", "write to this file (mode 0600) instead of standard output")
	}); help || err != nil {
		return err
	}
	snap, err := loadFor("jwks", config)
	if err != nil {
		return err
	}
	set := append(snap.Codec.Keys().JWKS(withSecrets), '\n')
	if out == "" {
		_, err = stdout.Write(set)
		return err
	}
	tmp := out + ".tmp"
	if err := os.WriteFile(tmp, set, 0o600); err != nil {
		return err
	}
	return os.Rename(tmp, out)
}
