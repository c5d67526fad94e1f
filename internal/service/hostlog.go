package service

import (
	"log/slog"
	"slices"
	"strings"
	"time"

	"github.com/envoy-affinity/envoy-affinity/affinity"
	"github.com/envoy-affinity/envoy-affinity/internal/poolstate"
)

// logHostChanges returns an engine change hook that logs one line for each
// pool whose hosts or host states changed: which hosts came, left, or went
// from one state to another (active, draining, down).
func logHostChanges(log *slog.Logger) func(before, after *affinity.Snapshot) {
	return func(before, after *affinity.Snapshot) {
		old := map[string]*affinity.Pool{}
		for _, p := range before.Pools {
			old[p.Name] = p
		}
		for _, p := range after.Pools {
			prev, ok := old[p.Name]
			if !ok {
				continue // a new pool: the reload's own line says so
			}
			was := map[string]string{}
			for _, h := range poolstate.Hosts(prev) {
				was[h.ID] = h.State
			}
			var added, removed, changed []string
			active := 0
			for _, h := range poolstate.Hosts(p) {
				if h.State == poolstate.Active {
					active++
				}
				switch w, ok := was[h.ID]; {
				case !ok:
					added = append(added, h.ID+"="+h.Address)
				case w != h.State:
					changed = append(changed, h.ID+":"+w+"->"+h.State)
				}
				delete(was, h.ID)
			}
			for id := range was {
				removed = append(removed, id)
			}
			slices.Sort(removed)
			if len(added)+len(removed)+len(changed) == 0 {
				continue
			}
			log.Info("hosts changed", "pool", p.Name, "added", strings.Join(added, " "), "removed", strings.Join(removed, " "),
				"changed", strings.Join(changed, " "), "hosts", len(p.Specs), "active", active)
		}
	}
}

// logSnapshot logs each pool of a configuration put in force: its hosts
// and keys.
func logSnapshot(log *slog.Logger, msg string, s *affinity.Snapshot) {
	for _, p := range s.Pools {
		ids := make([]string, 0, p.Hosts.Len())
		for _, h := range p.Hosts.Hosts() {
			ids = append(ids, h.ID+"="+h.Address)
		}
		log.Info(msg, "pool", p.Name, "hosts", strings.Join(ids, " "), "signing_key", s.Codec.Keys().Signer(time.Now()).ID, "keys", strings.Join(s.Codec.Keys().IDs(), ","))
	}
}
