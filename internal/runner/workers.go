package runner

import (
	"context"
	"sync"
)

// poolWorkers runs one background task per pool that has a setting C for
// it (a discovery, an active health probe) and restarts a pool's task when
// a reload changes its setting; a task whose pool no longer has one is
// stopped. Each running task keeps a state S (its statistics, say).
type poolWorkers[C comparable, S any] struct {
	ctx context.Context
	// start makes a task's state; run then runs the task until its
	// context ends.
	start func(pool string, conf C) S
	run   func(ctx context.Context, pool string, conf C, state S)

	mu      sync.Mutex
	running map[string]*poolWorker[C, S] // by pool name
	wg      sync.WaitGroup
}

type poolWorker[C comparable, S any] struct {
	conf   C
	state  S
	cancel context.CancelFunc
}

func newPoolWorkers[C comparable, S any](ctx context.Context, start func(string, C) S, run func(context.Context, string, C, S)) *poolWorkers[C, S] {
	return &poolWorkers[C, S]{ctx: ctx, start: start, run: run, running: map[string]*poolWorker[C, S]{}}
}

// reconcile makes the running tasks those of want (pool name → setting).
func (w *poolWorkers[C, S]) reconcile(want map[string]C) {
	w.mu.Lock()
	defer w.mu.Unlock()
	for pool, r := range w.running {
		if conf, ok := want[pool]; !ok || conf != r.conf {
			r.cancel()
			delete(w.running, pool)
		}
	}
	for pool, conf := range want {
		if _, ok := w.running[pool]; ok {
			continue
		}
		ctx, cancel := context.WithCancel(w.ctx)
		r := &poolWorker[C, S]{conf: conf, state: w.start(pool, conf), cancel: cancel}
		w.running[pool] = r
		w.wg.Add(1)
		go func() {
			defer w.wg.Done()
			w.run(ctx, pool, conf, r.state)
		}()
	}
}

// lookup returns the setting and state of the pool's running task.
func (w *poolWorkers[C, S]) lookup(pool string) (conf C, state S, ok bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	r, ok := w.running[pool]
	if !ok {
		return conf, state, false
	}
	return r.conf, r.state, true
}

// wait blocks until every task has stopped (after the context ends).
func (w *poolWorkers[C, S]) wait() { w.wg.Wait() }
