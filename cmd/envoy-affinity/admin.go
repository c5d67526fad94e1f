package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"net/netip"
	"strings"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/envoy-affinity/envoy-affinity/affinity"
	"github.com/envoy-affinity/envoy-affinity/affinity/redisstore"
)

// serverState is what the admin endpoints report on.
type serverState struct {
	engine       *affinity.Engine
	discoveries  *discoveries
	metrics      *metrics
	log          *slog.Logger
	shuttingDown atomic.Bool
	// shared is the store the replicas share (nil: none): drains made
	// here are written to it for the others.
	shared *redisstore.Store
	// doctor checks Envoy's configuration (/debug/doctor).
	doctor *envoyDoctor
}

// poolView is the JSON shape of /debug/pools.
type poolView struct {
	Name   string     `json:"name"`
	Mode   string     `json:"mode"`
	Source sourceView `json:"source"`
	Cookie string     `json:"cookie"`
	Hosts  []hostView `json:"hosts"`
}

// sourceView says where a pool's hosts come from and how reading them goes.
type sourceView struct {
	Kind        string     `json:"kind"`
	Refreshes   uint64     `json:"refreshes"`
	Errors      uint64     `json:"errors"`
	LastRefresh *time.Time `json:"last_refresh,omitempty"`
}

type hostView struct {
	ID      string `json:"id"`
	Address string `json:"address"`
	Weight  uint32 `json:"weight"`
	// State is active, draining, or down (held down by the service's own
	// health checks; the host source still lists it).
	State         string     `json:"state"`
	DrainingUntil *time.Time `json:"draining_until,omitempty"`
	// Sessions are the host's active sessions as bounded loads count them.
	Sessions int `json:"sessions"`
	// Operator is the operator's runtime state of the host, set through
	// this API: drain or undrain.
	Operator string `json:"operator,omitempty"`
}

// adminTimeouts bound the admin server's connections: a slow client cannot
// hold one open, and an idle keep-alive connection is closed. The write
// timeout leaves room for a 30-second CPU profile (-pprof).
var adminTimeouts = struct{ readHeader, read, write, idle time.Duration }{
	readHeader: 5 * time.Second, read: 10 * time.Second, write: 60 * time.Second, idle: 60 * time.Second,
}

// newAdminServer is the admin HTTP server, with adminTimeouts.
func newAdminServer(h http.Handler) *http.Server {
	return &http.Server{Handler: h, ReadHeaderTimeout: adminTimeouts.readHeader, ReadTimeout: adminTimeouts.read,
		WriteTimeout: adminTimeouts.write, IdleTimeout: adminTimeouts.idle}
}

// stateChange guards an endpoint that changes state (drain, undrain)
// against a web page in the operator's browser: cross-origin requests are
// refused (Go's CrossOriginProtection: Sec-Fetch-Site, or Origin against
// Host), and without an admin token the Host must be an IP address or
// localhost, which a page on another name reaching the API through DNS
// rebinding cannot send.
func stateChange(token *bearerToken, next http.Handler) http.Handler {
	crossOrigin := http.NewCrossOriginProtection()
	return crossOrigin.Handler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if token == nil && !directHost(r.Host) {
			writeJSON(w, http.StatusForbidden, map[string]string{"error": fmt.Sprintf(
				"Host %q: without -admin-token-file, state changes are taken only for an IP address or localhost", r.Host)})
			return
		}
		next.ServeHTTP(w, r)
	}))
}

// directHost reports whether host (with or without a port) is an IP
// literal or localhost.
func directHost(host string) bool {
	if h, _, err := net.SplitHostPort(host); err == nil {
		host = h
	}
	host = strings.TrimSuffix(strings.TrimPrefix(host, "["), "]")
	if _, err := netip.ParseAddr(host); err == nil {
		return true
	}
	return strings.EqualFold(host, "localhost")
}

// adminHandler serves the admin API. With a token, every endpoint but the
// probes and the public keys requires it.
func adminHandler(s *serverState, token *bearerToken, pprofOn bool) http.Handler {
	mux := http.NewServeMux()
	private := http.NewServeMux()
	mux.Handle("/", token.require(private))
	private.Handle("GET /metrics", promhttp.HandlerFor(s.metrics.reg, promhttp.HandlerOpts{}))
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		_, _ = w.Write([]byte("ok\n"))
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, _ *http.Request) {
		if s.shuttingDown.Load() {
			http.Error(w, "shutting down", http.StatusServiceUnavailable)
			return
		}
		for _, p := range s.engine.Snapshot().Pools {
			if p.Hosts.Len() > 0 {
				_, _ = w.Write([]byte("ready\n"))
				return
			}
		}
		http.Error(w, "no hosts", http.StatusServiceUnavailable)
	})
	// The public keys that verify session tokens, for jwt_authn's
	// remote_jwks. HS256 secrets are never served.
	mux.HandleFunc("GET /.well-known/jwks.json", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write(s.engine.Snapshot().Codec.Keys().JWKS(false))
	})
	private.HandleFunc("GET /debug/pools", s.pools)
	private.HandleFunc("GET /debug/explain", s.explain)
	if s.doctor != nil {
		private.HandleFunc("GET /debug/doctor", s.doctor.serveHTTP)
	}
	private.Handle("POST /pools/{pool}/hosts/{host}/drain", stateChange(token, http.HandlerFunc(s.drain)))
	private.Handle("POST /pools/{pool}/hosts/{host}/undrain", stateChange(token, http.HandlerFunc(s.drain)))
	if pprofOn {
		private.HandleFunc("/debug/pprof/", pprof.Index)
		private.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
		private.HandleFunc("/debug/pprof/profile", pprof.Profile)
		private.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
		private.HandleFunc("/debug/pprof/trace", pprof.Trace)
	}
	return mux
}

func (s *serverState) pools(w http.ResponseWriter, _ *http.Request) {
	snap := s.engine.Snapshot()
	out := struct {
		Pools []poolView `json:"pools"`
		Keys  []string   `json:"keys"`
		// UnknownPoolRequests were passed through untouched: no pool
		// was named for their cluster.
		UnknownPoolRequests uint64 `json:"unknown_pool_requests"`
	}{Keys: snap.Codec.Keys().IDs(), UnknownPoolRequests: s.engine.UnknownPoolRequests()}
	now := s.engine.Now()
	for _, p := range snap.Pools {
		out.Pools = append(out.Pools, s.poolView(p, now))
	}
	writeJSON(w, http.StatusOK, out)
}

func (s *serverState) poolView(p *affinity.Pool, now time.Time) poolView {
	pv := poolView{Name: p.Name, Mode: string(p.Mode), Cookie: p.Cookie.Name, Hosts: []hostView{}}
	kind, refreshes, errs, last, _ := s.discoveries.status(p.Name)
	pv.Source = sourceView{Kind: kind, Refreshes: refreshes, Errors: errs}
	if !last.IsZero() {
		pv.Source.LastRefresh = &last
	}
	load := s.engine.ActiveSessions(p.Name, now)
	operator := s.engine.OperatorStates(p.Name)
	for _, hs := range hostStates(p) {
		h := hs.host
		hv := hostView{ID: h.ID, Address: h.Address, Weight: h.Weight, State: hs.state, Sessions: load[h.ID]}
		if hs.state == "draining" {
			hv.DrainingUntil = &hs.until
		}
		if o, ok := operator[h.ID]; ok {
			hv.Operator = map[bool]string{true: "drain", false: "undrain"}[o.Draining]
		}
		pv.Hosts = append(pv.Hosts, hv)
	}
	return pv
}

// hostState is a host of a pool's source list and its state.
type hostState struct {
	host  affinity.Host
	state string // active, draining, down
	until time.Time
}

// hostStates lists the pool's hosts as the source lists them, so that hosts
// the service's health checks hold down show too.
func hostStates(p *affinity.Pool) []hostState {
	out := make([]hostState, 0, len(p.Specs))
	for _, spec := range p.Specs {
		hs := hostState{host: affinity.NewHost(spec.Name, spec.Address, spec.Weight), state: "active"}
		if _, in := p.Hosts.Lookup(hs.host.ID); !in {
			hs.state = "down"
		} else if d, ok := p.Draining[hs.host.ID]; ok {
			hs.state, hs.until = "draining", d
		}
		out = append(out, hs)
	}
	return out
}

// explain answers GET /debug/explain?pool=P&cookie=V or &key=K.
func (s *serverState) explain(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	pool := q.Get("pool")
	if pool == "" {
		if pools := s.engine.Snapshot().Pools; len(pools) == 1 {
			pool = pools[0].Name
		}
	}
	x, err := s.engine.Explain(pool, q.Get("cookie"), q.Get("key"))
	if err != nil {
		writeError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, x)
}

// DefaultDrainTimeout is how long a host drained through the admin API
// keeps its sessions when the request names no deadline.
const DefaultDrainTimeout = 5 * time.Minute

// drain answers POST /pools/P/hosts/H/drain?deadline=D (a duration from now
// or an RFC 3339 time) and .../undrain.
func (s *serverState) drain(w http.ResponseWriter, r *http.Request) {
	pool, host := r.PathValue("pool"), r.PathValue("host")
	var err error
	var st affinity.OperatorState
	if strings.HasSuffix(r.URL.Path, "/undrain") {
		err = s.engine.UndrainHost(pool, host)
		if err == nil {
			s.log.Info("host undrained", "pool", pool, "host", host)
		}
	} else {
		var deadline time.Time
		if deadline, err = parseDeadline(r.URL.Query().Get("deadline"), s.engine.Now()); err != nil {
			writeJSON(w, http.StatusBadRequest, map[string]string{"error": err.Error()})
			return
		}
		st = affinity.OperatorState{Draining: true, Deadline: deadline}
		err = s.engine.DrainHost(pool, host, deadline)
		if err == nil {
			s.log.Info("host draining", "pool", pool, "host", host, "until", deadline.UTC().Format(time.RFC3339))
		}
	}
	if err != nil {
		writeError(w, err)
		return
	}
	reply := drainReply{hostView: hostView{ID: host}}
	if s.shared != nil {
		// In force here already; the other replicas read it from Redis
		// within store.redis.sync_interval.
		shared := true
		if err := s.shared.PutOperatorState(pool, host, st); err != nil {
			shared = false
			reply.Warning = "not shared yet: " + err.Error()
			s.log.Warn("operator change in force on this replica only until redis answers", "pool", pool, "host", host, "err", err)
		}
		reply.Shared = &shared
	}
	snap := s.engine.Snapshot()
	p, _ := snap.Pool(pool, "")
	for _, hv := range s.poolView(p, s.engine.Now()).Hosts {
		if hv.ID == host {
			reply.hostView = hv
		}
	}
	writeJSON(w, http.StatusOK, reply)
}

// drainReply is the answer to a drain or an undrain: the host as
// /debug/pools shows it, and with a shared store whether the other
// replicas have it.
type drainReply struct {
	hostView
	Shared  *bool  `json:"shared,omitempty"`
	Warning string `json:"warning,omitempty"`
}

// parseDeadline reads a drain deadline: a duration from now ("90s", "10m")
// or an RFC 3339 time; empty is DefaultDrainTimeout from now.
func parseDeadline(v string, now time.Time) (time.Time, error) {
	if v == "" {
		return now.Add(DefaultDrainTimeout), nil
	}
	if d, err := time.ParseDuration(v); err == nil {
		if d < 0 {
			return time.Time{}, fmt.Errorf("deadline %q is negative", v)
		}
		return now.Add(d), nil
	}
	t, err := time.Parse(time.RFC3339, v)
	if err != nil {
		return time.Time{}, fmt.Errorf("deadline %q: give a duration such as 10m or a time such as 2026-11-27T18:00:00Z", v)
	}
	return t, nil
}

func writeError(w http.ResponseWriter, err error) {
	code := http.StatusBadRequest
	if errors.Is(err, affinity.ErrUnknownPool) || errors.Is(err, affinity.ErrUnknownHost) {
		code = http.StatusNotFound
	}
	writeJSON(w, code, map[string]string{"error": err.Error()})
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(v)
}
