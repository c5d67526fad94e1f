// Package admin is the service's admin HTTP API: the probes, the public
// keys Envoy verifies session tokens with, the metrics, the debug views of
// pools, sessions and Envoy's configuration, and the operator's drains.
//
// Every endpoint is registered through API.Handle with the access it needs:
// Public (no token), Private (the bearer token when there is one) or
// StateChange (private, and refused to cross-site requests). The API reads
// the service through small interfaces (Engine, Discovery, SharedStore,
// Doctor, Readiness), so that it can be served, and tested, over anything
// that answers them.
package admin

import (
	"context"
	"log/slog"
	"net/http"
	"net/http/pprof"
	"time"

	"github.com/envoy-affinity/envoy-affinity/affinity"
	"github.com/envoy-affinity/envoy-affinity/envoy/doctor"
	"github.com/envoy-affinity/envoy-affinity/internal/poolstate"
)

// Engine is what the API reads from the decision engine, and the drains it
// makes there.
type Engine interface {
	Snapshot() *affinity.Snapshot
	Now() time.Time
	ActiveSessions(pool string, now time.Time) map[string]int
	HostLoad(pool string) (map[string]float64, time.Time, bool)
	OperatorStates(pool string) map[string]affinity.OperatorState
	UnknownPoolRequests() uint64
	Explain(pool, cookie, key string) (affinity.Explanation, error)
	DrainHost(pool, id string, deadline time.Time) error
	UndrainHost(pool, id string) error
}

// Discovery reports how each pool's discovery goes (false: the pool has
// none, its hosts are the configuration's).
type Discovery interface {
	Status(pool string) (poolstate.Discovery, bool)
}

// SharedStore is the store the replicas share: drains made here are
// written to it for the others.
type SharedStore interface {
	PutOperatorState(pool, host string, st affinity.OperatorState) error
}

// Doctor examines Envoy's configuration now; an error that is
// envoydoctor.ErrNoEnvoy says there is no Envoy to examine.
type Doctor interface {
	Examine(ctx context.Context) (*doctor.Report, error)
}

// Readiness says whether the service is shutting down (not ready, still
// serving).
type Readiness interface {
	ShuttingDown() bool
}

// Deps are what the API serves from.
type Deps struct {
	Engine Engine
	// Discovery is nil when no pool has one.
	Discovery Discovery
	// Shared is nil without a shared store.
	Shared SharedStore
	// Doctor is nil to leave /debug/doctor out.
	Doctor Doctor
	// Metrics serves /metrics (nil: left out).
	Metrics http.Handler
	// Readiness is nil for a service that never shuts down (tests).
	Readiness Readiness
	// Token guards every endpoint but the Public ones (nil: none does).
	Token *Token
	// Pprof serves Go's profiler at /debug/pprof/.
	Pprof bool
	Log   *slog.Logger
}

// Access is who may call an endpoint.
type Access int

const (
	// Public endpoints need no token: the probes and the public keys.
	Public Access = iota
	// Private endpoints need the token when there is one.
	Private
	// StateChange endpoints are Private and also refuse cross-origin
	// requests and, without a token, a Host that is not an IP address or
	// localhost (see stateChange).
	StateChange
)

// Route is a registered endpoint.
type Route struct {
	Pattern string // as http.ServeMux reads it: "GET /debug/pools"
	Help    string
	Access  Access
}

// API is the admin API's handler.
type API struct {
	d       Deps
	mux     *http.ServeMux // the public endpoints, and the private ones behind the token
	private *http.ServeMux
	routes  []Route
}

// New is the API with its endpoints registered.
func New(d Deps) *API {
	a := &API{d: d, mux: http.NewServeMux(), private: http.NewServeMux()}
	a.mux.Handle("/", d.Token.require(a.private))

	a.Handle("GET /healthz", "alive", Public, http.HandlerFunc(a.healthz))
	a.Handle("GET /readyz", "a configuration with at least one host is loaded; 503 during shutdown", Public, http.HandlerFunc(a.readyz))
	// The public keys that verify session tokens, for jwt_authn's
	// remote_jwks. HS256 secrets are never served.
	a.Handle("GET /.well-known/jwks.json", "the Ed25519 public keys, for jwt_authn's remote_jwks", Public, http.HandlerFunc(a.jwks))
	if d.Metrics != nil {
		a.Handle("GET /metrics", "Prometheus metrics", Private, d.Metrics)
	}
	a.Handle("GET /debug/pools", "per pool: mode, discovery, each host's state, sessions and operator state", Private, http.HandlerFunc(a.pools))
	a.Handle("GET /debug/explain", "what a request with a cookie (?cookie=) or key (?key=) gets, and why", Private, http.HandlerFunc(a.explain))
	if d.Doctor != nil {
		a.Handle("GET /debug/doctor", "Envoy's configuration examined now against the service's", Private, http.HandlerFunc(a.doctor))
	}
	a.Handle("POST /pools/{pool}/hosts/{host}/drain", "drain the host until ?deadline= (5m when left out)", StateChange, http.HandlerFunc(a.drain))
	a.Handle("POST /pools/{pool}/hosts/{host}/undrain", "make the host active again", StateChange, http.HandlerFunc(a.drain))
	if d.Pprof {
		a.Handle("/debug/pprof/", "Go's profiler", Private, http.HandlerFunc(pprof.Index))
		a.Handle("/debug/pprof/cmdline", "Go's profiler", Private, http.HandlerFunc(pprof.Cmdline))
		a.Handle("/debug/pprof/profile", "Go's profiler", Private, http.HandlerFunc(pprof.Profile))
		a.Handle("/debug/pprof/symbol", "Go's profiler", Private, http.HandlerFunc(pprof.Symbol))
		a.Handle("/debug/pprof/trace", "Go's profiler", Private, http.HandlerFunc(pprof.Trace))
	}
	return a
}

// Handle registers an endpoint: pattern as http.ServeMux reads it, a line
// of help, and who may call it.
func (a *API) Handle(pattern, help string, access Access, h http.Handler) {
	switch access {
	case Public:
		a.mux.Handle(pattern, h)
	case StateChange:
		a.private.Handle(pattern, stateChange(a.d.Token, h))
	default:
		a.private.Handle(pattern, h)
	}
	a.routes = append(a.routes, Route{Pattern: pattern, Help: help, Access: access})
}

// Routes lists the endpoints in the order they were registered.
func (a *API) Routes() []Route { return append([]Route(nil), a.routes...) }

// ServeHTTP implements http.Handler.
func (a *API) ServeHTTP(w http.ResponseWriter, r *http.Request) { a.mux.ServeHTTP(w, r) }

// timeouts bound the admin server's connections: a slow client cannot
// hold one open, and an idle keep-alive connection is closed. The write
// timeout leaves room for a 30-second CPU profile (pprof).
var timeouts = struct{ readHeader, read, write, idle time.Duration }{
	readHeader: 5 * time.Second, read: 10 * time.Second, write: 60 * time.Second, idle: 60 * time.Second,
}

// NewServer is the admin HTTP server of h, with the admin timeouts.
func NewServer(h http.Handler) *http.Server {
	return &http.Server{Handler: h, ReadHeaderTimeout: timeouts.readHeader, ReadTimeout: timeouts.read,
		WriteTimeout: timeouts.write, IdleTimeout: timeouts.idle}
}

func (a *API) healthz(w http.ResponseWriter, _ *http.Request) {
	_, _ = w.Write([]byte("ok\n"))
}

func (a *API) readyz(w http.ResponseWriter, _ *http.Request) {
	if a.d.Readiness != nil && a.d.Readiness.ShuttingDown() {
		http.Error(w, "shutting down", http.StatusServiceUnavailable)
		return
	}
	for _, p := range a.d.Engine.Snapshot().Pools {
		if p.Hosts.Len() > 0 {
			_, _ = w.Write([]byte("ready\n"))
			return
		}
	}
	http.Error(w, "no hosts", http.StatusServiceUnavailable)
}

func (a *API) jwks(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "application/json")
	_, _ = w.Write(a.d.Engine.Snapshot().Codec.Keys().JWKS(false))
}
