package main

import (
	"encoding/json"
	"net/http"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/envoy-affinity/envoy-affinity/affinity"
)

// serverState is what the admin endpoints report on.
type serverState struct {
	engine       *affinity.Engine
	discoveries  *discoveries
	metrics      *metrics
	shuttingDown atomic.Bool
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
	ID            string     `json:"id"`
	Address       string     `json:"address"`
	Weight        uint32     `json:"weight"`
	State         string     `json:"state"`
	DrainingUntil *time.Time `json:"draining_until,omitempty"`
}

func adminHandler(s *serverState) http.Handler {
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(s.metrics.reg, promhttp.HandlerOpts{}))
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
	mux.HandleFunc("GET /debug/pools", func(w http.ResponseWriter, _ *http.Request) {
		snap := s.engine.Snapshot()
		out := struct {
			Pools []poolView `json:"pools"`
			Keys  []string   `json:"keys"`
			// UnknownPoolRequests were passed through untouched: no pool
			// was named for their cluster.
			UnknownPoolRequests uint64 `json:"unknown_pool_requests"`
		}{Keys: snap.Codec.Keys().IDs(), UnknownPoolRequests: s.engine.UnknownPoolRequests()}
		for _, p := range snap.Pools {
			pv := poolView{Name: p.Name, Mode: string(p.Mode), Cookie: p.Cookie.Name, Hosts: []hostView{}}
			kind, refreshes, errs, last, _ := s.discoveries.status(p.Name)
			pv.Source = sourceView{Kind: kind, Refreshes: refreshes, Errors: errs}
			if !last.IsZero() {
				pv.Source.LastRefresh = &last
			}
			for _, h := range p.Hosts.Hosts() {
				hv := hostView{ID: h.ID, Address: h.Address, Weight: h.Weight, State: "active"}
				if d, ok := p.Draining[h.ID]; ok {
					hv.State, hv.DrainingUntil = "draining", &d
				}
				pv.Hosts = append(pv.Hosts, hv)
			}
			out.Pools = append(out.Pools, pv)
		}
		w.Header().Set("Content-Type", "application/json")
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		_ = enc.Encode(out)
	})
	return mux
}
