// Package service runs the envoy-affinity server: it loads the
// configuration and its keys, starts the shared store, the ext_proc gRPC
// listener and the admin listener, the per-pool discovery, health probes
// and load readers and the Envoy doctor, reloads the configuration, the keys and the
// TLS files when they change (or on SIGHUP), and shuts down in order. Run
// is its one entry point; the command line (cmd/envoy-affinity) fills its
// Config.
package service

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"reflect"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/envoy-affinity/envoy-affinity/affinity"
	"github.com/envoy-affinity/envoy-affinity/affinity/redisstore"
	"github.com/envoy-affinity/envoy-affinity/extproc"
	"github.com/envoy-affinity/envoy-affinity/internal/admin"
	"github.com/envoy-affinity/envoy-affinity/internal/envoydoctor"
	"github.com/envoy-affinity/envoy-affinity/internal/metrics"
	"github.com/envoy-affinity/envoy-affinity/internal/runner"
	"github.com/envoy-affinity/envoy-affinity/internal/tlsreload"
)

// Config are the server's settings.
type Config struct {
	// ConfigFile is the configuration (YAML).
	ConfigFile string
	// GRPCAddr is the listen address of the ext_proc gRPC server.
	GRPCAddr string
	// AdminAddr is the admin HTTP server's; empty for none.
	AdminAddr string
	// ReloadInterval is how often the configuration, keys and TLS files
	// are looked at for changes (positive).
	ReloadInterval time.Duration
	// ShutdownGrace is how long open streams may take to finish on
	// shutdown.
	ShutdownGrace time.Duration
	// ShutdownDelay is how long the server keeps serving, not ready, once
	// ctx is done, so that health checkers take it out first.
	ShutdownDelay time.Duration
	// AdminTokenFile holds the admin API's bearer token; empty for none.
	AdminTokenFile string
	// Pprof serves Go's profiler on the admin listener.
	Pprof bool
	// GRPCTLS and AdminTLS are the listeners' TLS files (no Cert path:
	// plaintext). Their labels name them in errors.
	GRPCTLS, AdminTLS tlsreload.Files
	// DoctorInterval is how often the Envoy doctor examines Envoy's
	// configuration; 0 only on request.
	DoctorInterval time.Duration
	// ExtAuthz also answers Envoy's ext_authz Check on the gRPC listener.
	ExtAuthz bool
}

// Run serves until ctx is done, then shuts down: it stops being ready,
// serves on for ShutdownDelay, then lets open streams finish within
// ShutdownGrace. It returns an error when the server cannot start or a
// listener fails.
func Run(ctx context.Context, cfg Config, log *slog.Logger) error {
	if cfg.ReloadInterval <= 0 {
		return errors.New("service: the reload interval must be positive")
	}
	s, err := start(cfg, log)
	if err != nil {
		return err
	}
	defer s.close()
	return s.serve(ctx)
}

// server is what start made ready: the configuration loaded, the store
// started, the TLS files read and the listeners open.
type server struct {
	cfg               Config
	log               *slog.Logger
	snap              *affinity.Snapshot // as first loaded
	engine            *affinity.Engine
	shared            *redisstore.Store // nil: none
	token             *admin.Token      // nil: none
	reload            *reloader
	grpcTLS, adminTLS *tlsreload.Provider // nil: plaintext
	grpcLn, adminLn   net.Listener        // adminLn nil: no admin listener
}

// start does what can fail before serving, in an order that reports the
// first problem a user has to fix.
func start(cfg Config, log *slog.Logger) (_ *server, err error) {
	s := &server{cfg: cfg, log: log, reload: newReloader(cfg.ConfigFile, log)}
	defer func() {
		if err != nil {
			s.close()
		}
	}()
	if s.token, err = admin.NewToken(cfg.AdminTokenFile, log); err != nil {
		return nil, err
	}
	if s.snap, err = affinity.LoadFile(cfg.ConfigFile, os.Getenv, nil, time.Now()); err != nil {
		return nil, err
	}
	s.engine = affinity.NewEngine(s.snap, nil)
	s.engine.OnChange(logHostChanges(log))
	if s.shared, err = startSharedStore(s.engine, s.snap, log); err != nil {
		return nil, err
	}
	s.reload.engine = s.engine
	s.reload.keysMode.warn(s.snap.KeysFile)
	logSnapshot(log, "config loaded", s.snap)
	if s.grpcTLS, s.adminTLS, err = loadTLS(cfg, log); err != nil {
		return nil, err
	}
	s.reload.tls = []*tlsreload.Provider{s.grpcTLS, s.adminTLS}
	if s.grpcLn, s.adminLn, err = listen(cfg); err != nil {
		return nil, err
	}
	return s, nil
}

// close stops the shared store.
func (s *server) close() {
	if s.shared != nil {
		s.shared.Close()
	}
}

// serve runs the servers and the background work until ctx is done, then
// shuts them down in order.
func (s *server) serve(ctx context.Context) error {
	cfg, log := s.cfg, s.log
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	discoveries := runner.NewDiscoveries(ctx, s.engine, log)
	loads := runner.NewLoads(ctx, s.engine, log)
	met := metrics.New(s.engine, discoveries, loads, s.shared, s.certificates()...)
	s.reload.counter = met
	healthSrv := health.NewServer()
	grpcSrv := newGRPCServer(cfg, s.engine, s.grpcTLS, met, healthSrv, log)

	discoveries.Reconcile(s.snap)
	probers := runner.NewProbers(ctx, s.engine, log)
	probers.Reconcile(s.snap)
	loads.Reconcile(s.snap)
	s.reload.onUpdate = func(snap *affinity.Snapshot) {
		discoveries.Reconcile(snap)
		probers.Reconcile(snap)
		loads.Reconcile(snap)
		if !reflect.DeepEqual(snap.Redis, s.snap.Redis) {
			log.Warn("store.redis changed: the change takes effect at the next start; the store in force stays")
		}
	}
	doc := envoydoctor.New(s.engine, met, log)
	doctorDone := make(chan struct{})
	go func() {
		defer close(doctorDone)
		if cfg.DoctorInterval > 0 {
			doc.Run(ctx, cfg.DoctorInterval)
		}
	}()

	s.warnOpenListeners()
	errc := make(chan error, 3)
	go func() { errc <- grpcSrv.Serve(s.grpcLn) }()
	var ready readiness
	var adminSrv *http.Server
	if s.adminLn != nil {
		deps := admin.Deps{Engine: s.engine, Discovery: discoveries, Doctor: doc, Metrics: met.Handler(), Readiness: &ready,
			Token: s.token, Pprof: cfg.Pprof, Log: log}
		if s.shared != nil {
			deps.Shared = s.shared
		}
		adminSrv = admin.NewServer(admin.New(deps))
		go func() { errc <- adminSrv.Serve(s.adminTLS.Listen(s.adminLn)) }()
	}
	// SIGHUP is caught before anything reports ready, so a reload request
	// never meets the default action (exit).
	hup := hangups(ctx)
	reloadDone := make(chan struct{})
	go func() {
		defer close(reloadDone)
		s.reload.run(ctx, cfg.ReloadInterval, hup)
	}()
	log.Info("serving", "grpc", s.grpcLn.Addr().String(), "grpc_security", s.grpcTLS.Mode(), "admin", addrOf(s.adminLn), "admin_security", s.adminTLS.Mode())

	var serveErr error
	select {
	case <-ctx.Done():
	case serveErr = <-errc:
	}
	// Shutdown: say we are going, give health checkers time to notice, then
	// stop taking streams and let open ones finish.
	ready.stopping.Store(true)
	healthSrv.Shutdown()
	if cfg.ShutdownDelay > 0 && serveErr == nil {
		log.Info("shutting down: not ready, still serving", "for", cfg.ShutdownDelay.String())
		time.Sleep(cfg.ShutdownDelay)
	}
	cancel()
	stopGRPC(grpcSrv, cfg.ShutdownGrace)
	if adminSrv != nil {
		sctx, scancel := context.WithTimeout(context.Background(), time.Second)
		_ = adminSrv.Shutdown(sctx)
		scancel()
	}
	<-reloadDone
	<-doctorDone
	discoveries.Wait()
	probers.Wait()
	loads.Wait()
	log.Info("stopped")
	if serveErr != nil && !errors.Is(serveErr, http.ErrServerClosed) && !errors.Is(serveErr, grpc.ErrServerStopped) {
		return serveErr
	}
	return nil
}

// certificates are the listeners' TLS the metrics report (those on).
func (s *server) certificates() []metrics.Certificate {
	var certs []metrics.Certificate
	for _, p := range []*tlsreload.Provider{s.grpcTLS, s.adminTLS} {
		if p != nil {
			certs = append(certs, p)
		}
	}
	return certs
}

// warnOpenListeners warns about a listener others can reach without client
// authentication.
func (s *server) warnOpenListeners() {
	if s.grpcTLS.Mode() != "mutual TLS" && !isLoopback(s.grpcLn.Addr()) {
		// Any client that reaches the port can pose as Envoy: ask for
		// decisions (host addresses opaque mode hides), report responses
		// that hold hosts down or teach application-cookie bindings.
		s.log.Warn("the ext_proc gRPC listener listens beyond loopback without client authentication: let only Envoy reach it (a NetworkPolicy) or require its certificate (-grpc-client-ca)",
			"grpc", s.grpcLn.Addr().String(), "grpc_security", s.grpcTLS.Mode())
	}
	if s.adminLn != nil && s.token == nil && !isLoopback(s.adminLn.Addr()) {
		s.log.Warn("the admin API (drain, explain, metrics) listens beyond loopback without -admin-token-file", "admin", s.adminLn.Addr().String())
	}
}

// stopGRPC lets open streams finish within grace, then cuts them.
func stopGRPC(srv *grpc.Server, grace time.Duration) {
	stopped := make(chan struct{})
	go func() { srv.GracefulStop(); close(stopped) }()
	select {
	case <-stopped:
	case <-time.After(grace):
		srv.Stop()
		<-stopped
	}
}

// startSharedStore starts the store the replicas share, when the
// configuration names one (nil when it does not).
func startSharedStore(engine *affinity.Engine, snap *affinity.Snapshot, log *slog.Logger) (*redisstore.Store, error) {
	if snap.Redis == nil {
		return nil, nil
	}
	local := affinity.NewMemoryStore(snap.MaxSessions, snap.IdleTimeout())
	shared, err := redisstore.New(*snap.Redis, local, snap.IdleTimeout(), redisstore.Options{Logger: log.With("store", "redis")})
	if err != nil {
		return nil, err
	}
	engine.SetStore(shared)
	// Before serving: a new replica answers like the others from its
	// first request when Redis answers.
	shared.Start(engine)
	log.Info("shared store", "redis", strings.Join(snap.Redis.Addresses, ","), "mode", snap.Redis.Mode, "replica", shared.Replica(), "shared", shared.Shared())
	return shared, nil
}

// loadTLS loads the listeners' TLS files (nil for a listener without).
func loadTLS(cfg Config, log *slog.Logger) (grpcTLS, adminTLS *tlsreload.Provider, err error) {
	if cfg.GRPCTLS.Cert.Path != "" {
		// gRPC clients insist on ALPN h2.
		if grpcTLS, err = tlsreload.Load("gRPC", cfg.GRPCTLS, []string{"h2"}, log); err != nil {
			return nil, nil, err
		}
	}
	if cfg.AdminTLS.Cert.Path != "" {
		if adminTLS, err = tlsreload.Load("admin", cfg.AdminTLS, []string{"http/1.1"}, log); err != nil {
			return nil, nil, err
		}
	}
	return grpcTLS, adminTLS, nil
}

// listen opens the gRPC listener and the admin one (nil without an admin
// address).
func listen(cfg Config) (grpcLn, adminLn net.Listener, err error) {
	if grpcLn, err = net.Listen("tcp", cfg.GRPCAddr); err != nil {
		return nil, nil, err
	}
	if cfg.AdminAddr != "" {
		if adminLn, err = net.Listen("tcp", cfg.AdminAddr); err != nil {
			grpcLn.Close()
			return nil, nil, err
		}
	}
	return grpcLn, adminLn, nil
}

// newGRPCServer is the gRPC server: ext_proc, ext_authz when asked for, and
// gRPC health.
func newGRPCServer(cfg Config, engine *affinity.Engine, certs *tlsreload.Provider, met *metrics.Metrics, healthSrv *health.Server, log *slog.Logger) *grpc.Server {
	opts := extproc.ServerOptions()
	if certs != nil {
		opts = append(opts, grpc.Creds(credentials.NewTLS(certs.Config())))
	}
	srv := grpc.NewServer(opts...)
	xp := extproc.NewServer(engine, log)
	xp.Observe(met)
	extprocv3.RegisterExternalProcessorServer(srv, xp)
	if cfg.ExtAuthz {
		authz := extproc.NewAuthzServer(engine)
		authz.Observe(met)
		authv3.RegisterAuthorizationServer(srv, authz)
	}
	healthpb.RegisterHealthServer(srv, healthSrv)
	return srv
}

// readiness is the admin API's readiness: not ready once shutdown begins.
type readiness struct{ stopping atomic.Bool }

func (r *readiness) ShuttingDown() bool { return r.stopping.Load() }

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
