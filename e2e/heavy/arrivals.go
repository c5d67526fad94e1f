package main

import (
	"context"
	"sync"
	"time"
)

// arrivals is what sessions arriving during a run got: the host of each
// one's first answer, in arrival order, the requests answered, the
// sessions answered by more than one host and the requests that failed.
type arrivals struct {
	placed        []string
	ordinary      []served
	split, failed int
}

// arrive opens st.sessions sessions through url, evenly over st.over, each
// sending st.requests requests st.gap apart, and waits until they are done
// (or ctx is).
func arrive(ctx context.Context, st settings, url string) arrivals {
	var (
		mu sync.Mutex // guards a while the sessions run
		a  arrivals
		wg sync.WaitGroup
	)
	start := time.Now()
	for i := range st.sessions {
		due := start.Add(time.Duration(i) * st.over / time.Duration(st.sessions))
		if !wait(ctx, due) {
			break
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			u := newUser(url, 1)
			defer u.close()
			hosts := map[string]bool{}
			for k := range st.requests {
				if !wait(ctx, due.Add(time.Duration(k)*st.gap)) {
					return
				}
				r, err := u.get(ctx)
				mu.Lock()
				if err != nil {
					a.failed++
				} else {
					if len(hosts) == 0 {
						a.placed = append(a.placed, r.host)
					}
					r.first = k == 0
					hosts[r.host] = true
					a.ordinary = append(a.ordinary, r)
				}
				mu.Unlock()
			}
			if len(hosts) > 1 {
				mu.Lock()
				a.split++
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	return a
}
