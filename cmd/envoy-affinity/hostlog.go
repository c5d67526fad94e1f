package main

import (
	"log/slog"
	"slices"
	"strings"

	"github.com/envoy-affinity/envoy-affinity/affinity"
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
			for _, hs := range hostStates(prev) {
				was[hs.host.ID] = hs.state
			}
			var added, removed, changed []string
			active := 0
			for _, hs := range hostStates(p) {
				id := hs.host.ID
				if hs.state == "active" {
					active++
				}
				switch w, ok := was[id]; {
				case !ok:
					added = append(added, id+"="+hs.host.Address)
				case w != hs.state:
					changed = append(changed, id+":"+w+"->"+hs.state)
				}
				delete(was, id)
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
