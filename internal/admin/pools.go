package admin

import (
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/envoy-affinity/envoy-affinity/affinity"
	"github.com/envoy-affinity/envoy-affinity/internal/poolstate"
)

// poolView is the JSON shape of a pool in /debug/pools.
type poolView struct {
	Name      string        `json:"name"`
	Mode      string        `json:"mode"`
	Discovery discoveryView `json:"source"`
	Cookie    string        `json:"cookie"`
	Hosts     []hostView    `json:"hosts"`
}

// discoveryView says where a pool's hosts come from and how reading them
// goes.
type discoveryView struct {
	Kind        string     `json:"kind"`
	Refreshes   uint64     `json:"refreshes"`
	Errors      uint64     `json:"errors"`
	LastRefresh *time.Time `json:"last_refresh,omitempty"`
}

// static is the kind of a pool without discovery: its hosts are the
// configuration's.
const static = "static"

type hostView struct {
	ID      string `json:"id"`
	Address string `json:"address"`
	Weight  uint32 `json:"weight"`
	// State is active, draining, or down (held down by the service's own
	// health probes; the discovery still lists it).
	State         string     `json:"state"`
	DrainingUntil *time.Time `json:"draining_until,omitempty"`
	// Sessions are the host's active sessions as bounded loads count them.
	Sessions int `json:"sessions"`
	// Load is the host's requests in flight as the pool's load block last
	// read them (0 before the first reading; left out for a pool without
	// a load block).
	Load *float64 `json:"load,omitempty"`
	// Operator is the operator's runtime state of the host, set through
	// this API: drain or undrain.
	Operator string `json:"operator,omitempty"`
}

// pools answers GET /debug/pools.
func (a *API) pools(w http.ResponseWriter, _ *http.Request) {
	snap := a.d.Engine.Snapshot()
	out := struct {
		Pools []poolView `json:"pools"`
		Keys  []string   `json:"keys"`
		// UnknownPoolRequests were passed through untouched: no pool
		// was named for their cluster.
		UnknownPoolRequests uint64 `json:"unknown_pool_requests"`
	}{Keys: snap.Codec.Keys().IDs(), UnknownPoolRequests: a.d.Engine.UnknownPoolRequests()}
	now := a.d.Engine.Now()
	for _, p := range snap.Pools {
		out.Pools = append(out.Pools, a.poolView(p, now))
	}
	writeJSON(w, http.StatusOK, out)
}

func (a *API) poolView(p *affinity.Pool, now time.Time) poolView {
	pv := poolView{Name: p.Name, Mode: string(p.Mode), Cookie: p.Cookie.Name, Hosts: []hostView{}}
	pv.Discovery.Kind = static
	if d, ok := a.discovery(p.Name); ok {
		pv.Discovery = discoveryView{Kind: d.Kind, Refreshes: d.Refreshes, Errors: d.Errors}
		if !d.LastRefresh.IsZero() {
			pv.Discovery.LastRefresh = &d.LastRefresh
		}
	}
	load := a.d.Engine.ActiveSessions(p.Name, now)
	inflight, _, _ := a.d.Engine.HostLoad(p.Name)
	operator := a.d.Engine.OperatorStates(p.Name)
	for _, h := range poolstate.Hosts(p) {
		hv := hostView{ID: h.ID, Address: h.Address, Weight: h.Weight, State: h.State, Sessions: load[h.ID]}
		if p.Load != nil {
			l := inflight[h.Address]
			hv.Load = &l
		}
		if h.State == poolstate.Draining {
			hv.DrainingUntil = &h.Until
		}
		if o, ok := operator[h.ID]; ok {
			hv.Operator = map[bool]string{true: "drain", false: "undrain"}[o.Draining]
		}
		pv.Hosts = append(pv.Hosts, hv)
	}
	return pv
}

// discovery is how the pool's discovery goes (false: it has none).
func (a *API) discovery(pool string) (poolstate.Discovery, bool) {
	if a.d.Discovery == nil {
		return poolstate.Discovery{}, false
	}
	return a.d.Discovery.Status(pool)
}

// explain answers GET /debug/explain?pool=P&cookie=V or &key=K.
func (a *API) explain(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	pool := q.Get("pool")
	if pool == "" {
		if pools := a.d.Engine.Snapshot().Pools; len(pools) == 1 {
			pool = pools[0].Name
		}
	}
	x, err := a.d.Engine.Explain(pool, q.Get("cookie"), q.Get("key"))
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
func (a *API) drain(w http.ResponseWriter, r *http.Request) {
	pool, host := r.PathValue("pool"), r.PathValue("host")
	engine, log := a.d.Engine, a.d.Log
	var err error
	var st affinity.OperatorState
	if strings.HasSuffix(r.URL.Path, "/undrain") {
		err = engine.UndrainHost(pool, host)
		if err == nil {
			log.Info("host undrained", "pool", pool, "host", host)
		}
	} else {
		var deadline time.Time
		if deadline, err = parseDeadline(r.URL.Query().Get("deadline"), engine.Now()); err != nil {
			writeJSON(w, http.StatusBadRequest, map[string]string{"error": err.Error()})
			return
		}
		st = affinity.OperatorState{Draining: true, Deadline: deadline}
		err = engine.DrainHost(pool, host, deadline)
		if err == nil {
			log.Info("host draining", "pool", pool, "host", host, "until", deadline.UTC().Format(time.RFC3339))
		}
	}
	if err != nil {
		writeError(w, err)
		return
	}
	reply := drainReply{hostView: hostView{ID: host}}
	if a.d.Shared != nil {
		// In force here already; the other replicas read it from Redis
		// within store.redis.sync_interval.
		shared := true
		if err := a.d.Shared.PutOperatorState(pool, host, st); err != nil {
			shared = false
			reply.Warning = "not shared yet: " + err.Error()
			log.Warn("operator change in force on this replica only until redis answers", "pool", pool, "host", host, "err", err)
		}
		reply.Shared = &shared
	}
	p, _ := engine.Snapshot().Pool(pool, "")
	for _, hv := range a.poolView(p, engine.Now()).Hosts {
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
