// Package discovery reads a pool's hosts from where they already live: the
// co-located Envoy's admin API or DNS. A Lister is polled every interval; a
// failed or empty answer keeps the last good host list (it is logged and
// counted, never applied), so an outage of Envoy or DNS never empties a pool.
package discovery

import (
	"context"
	"errors"
	"log/slog"
	"slices"
	"sync/atomic"
	"time"

	"github.com/envoy-affinity/envoy-affinity/affinity"
)

// Lister answers with the pool's hosts as they are now.
type Lister interface {
	Hosts(ctx context.Context) ([]affinity.HostSpec, error)
}

// ErrEmpty is an answer without a single host; it is not applied.
var ErrEmpty = errors.New("the source has no host")

// Stats count a discovery's reads.
type Stats struct {
	Refreshes atomic.Uint64 // good answers
	Errors    atomic.Uint64 // failed or empty answers (the last good list stays)
	LastGood  atomic.Int64  // unix nanoseconds of the last good answer
}

// Run polls src every interval until ctx is done and hands each good answer
// that differs from the last to apply.
func Run(ctx context.Context, src Lister, every time.Duration, apply func([]affinity.HostSpec), stats *Stats, log *slog.Logger) {
	var last []affinity.HostSpec
	failing := false
	poll := func() {
		rctx, cancel := context.WithTimeout(ctx, max(every, time.Second))
		hosts, err := src.Hosts(rctx)
		cancel()
		if err == nil && len(hosts) == 0 {
			err = ErrEmpty
		}
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			stats.Errors.Add(1)
			if !failing {
				log.Warn("host discovery failed, the last good host list stays", "error", err)
			}
			failing = true
			return
		}
		stats.Refreshes.Add(1)
		stats.LastGood.Store(time.Now().UnixNano())
		if failing {
			log.Info("host discovery works again")
			failing = false
		}
		if !slices.Equal(hosts, last) {
			last = hosts
			apply(hosts)
			log.Info("hosts discovered", "hosts", len(hosts))
		}
	}
	poll()
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			poll()
		}
	}
}

var (
	_ Lister = (*EnvoyAdmin)(nil)
	_ Lister = (*DNS)(nil)
)
