package main

import (
	"context"
	"net/http"
	"time"
)

// limited serves next with at most cap(slots) requests at work at a time,
// each holding its slot for a fixed service time first: a host of limited
// capacity, whose latency grows with the requests queued on it. A request
// that finds every slot taken waits in line (Go serves the blocked senders
// of a channel in arrival order); one whose client goes away leaves the
// line.
type limited struct {
	slots chan struct{}
	// work is the service time; a test replaces it to hold a slot until
	// told.
	work func(ctx context.Context)
	next http.Handler
}

// limit returns next limited to capacity requests at a time, each taking
// d before it is served.
func limit(next http.Handler, capacity int, d time.Duration) *limited {
	return &limited{slots: make(chan struct{}, capacity), next: next, work: func(ctx context.Context) {
		t := time.NewTimer(d)
		defer t.Stop()
		select {
		case <-t.C:
		case <-ctx.Done():
		}
	}}
}

func (l *limited) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	select {
	case l.slots <- struct{}{}:
	case <-r.Context().Done():
		return
	}
	defer func() { <-l.slots }()
	l.work(r.Context())
	l.next.ServeHTTP(w, r)
}
