package redisstore

import (
	"context"
	"encoding/json"
	"errors"
	"maps"
	"net"
	"time"

	"github.com/redis/rueidis"

	"github.com/envoy-affinity/envoy-affinity/affinity"
)

// Engine is what the upkeep reads from and sets in the decision engine.
type Engine interface {
	Snapshot() *affinity.Snapshot
	// SetOperatorStates puts the fleet's drains and undrains in force.
	SetOperatorStates(map[string]map[string]affinity.OperatorState)
}

// ErrNotShared is returned for an operator change Redis did not take: it
// is in force on this replica and written when Redis answers again.
var ErrNotShared = errors.New("redis unreachable: in force on this replica, shared when redis is back")

// Start connects, reads the fleet's state once (so that a new replica
// answers like the others from its first request, when Redis answers
// within a second), then keeps the store in step every sync interval until
// Close: the active-session counts exchanged, the operator's states read,
// Redis probed while it is unreachable.
func (s *Store) Start(e Engine) {
	s.step(e)
	s.wg.Add(2)
	go s.writer()
	go s.upkeep(e)
}

func (s *Store) upkeep(e Engine) {
	defer s.wg.Done()
	t := time.NewTicker(s.cfg.SyncInterval)
	defer t.Stop()
	for {
		select {
		case <-s.done:
			return
		case <-t.C:
		case <-s.wake:
		}
		s.step(e)
	}
}

// step connects, probes, writes back what is pending, then syncs.
func (s *Store) step(e Engine) {
	ctx, cancel := context.WithTimeout(context.Background(), s.upkeepTimeout())
	defer cancel()
	c := s.client.Load()
	if c == nil {
		conn, err := rueidis.NewClient(s.opt)
		if err != nil {
			if s.stats.Outages.CompareAndSwap(0, 1) {
				s.log.Warn("redis unreachable at start: answering from this replica's memory until it is reachable", "err", err)
			}
			return
		}
		c = &conn
		s.client.Store(c)
	}
	if err := s.probe(ctx, *c); err != nil {
		s.toLocal(err)
		return
	}
	if err := s.reconcile(ctx, *c); err != nil {
		// What failed stays pending and is tried again next step. In a
		// Cluster, one node's keys may fail while the others answer.
		s.stats.Errors.Add(1)
		if s.cfg.Mode != affinity.RedisCluster {
			return
		}
	}
	if !s.shared.Load() {
		s.shared.Store(true)
		s.log.Info("redis reachable: sharing bindings, session counts and drains", "replica", s.replica)
	}
	if err := s.syncLoads(ctx, *c, e.Snapshot()); err != nil {
		s.stats.Errors.Add(1)
	}
	if err := s.syncOperatorStates(ctx, *c, e); err != nil {
		s.stats.Errors.Add(1)
	}
}

// probe checks that Redis answers: the server, or any node of a Cluster.
func (s *Store) probe(ctx context.Context, c rueidis.Client) error {
	if s.cfg.Mode != affinity.RedisCluster {
		return c.Do(ctx, c.B().Ping().Build()).Error()
	}
	var err error
	for _, n := range c.Nodes() {
		if err = n.Do(ctx, n.B().Ping().Build()).Error(); err == nil {
			return nil
		}
	}
	return cmpErr(err, errors.New("no cluster node known"))
}

func cmpErr(err, otherwise error) error {
	if err != nil {
		return err
	}
	return otherwise
}

// upkeepTimeout bounds the commands off the request path.
func (s *Store) upkeepTimeout() time.Duration {
	return max(time.Second, 20*s.cfg.Timeout)
}

// reconcile writes back what this replica decided while Redis was
// unreachable: its new bindings unless another replica bound the key
// meanwhile (then this replica adopts that one), and its operator changes.
func (s *Store) reconcile(ctx context.Context, c rueidis.Client) error {
	s.mu.Lock()
	pend, ops := s.pending, s.ops
	s.pending, s.ops = map[string]binding{}, map[string]operatorWrite{}
	s.mu.Unlock()
	now, life := time.Now(), s.lifetime()
	var cmds rueidis.Commands
	var bs []binding
	var unbinds []binding
	for _, b := range pend {
		if b.unbind {
			unbinds = append(unbinds, b)
			continue
		}
		if left := life - now.Sub(b.at); left > time.Millisecond {
			cmds = append(cmds, c.B().Set().Key(b.rkey).Value(b.host).Nx().Get().Px(left).Build())
			bs = append(bs, b)
		}
	}
	opsList := make([]operatorWrite, 0, len(ops))
	for _, o := range ops {
		opsList = append(opsList, o)
		cmds = append(cmds, c.B().Hset().Key(s.cfg.KeyPrefix+"o").FieldValue().FieldValue(o.field(), o.json()).Build())
	}
	for _, b := range unbinds {
		cmds = append(cmds, c.B().Del().Key(b.rkey).Build())
	}
	if len(cmds) == 0 {
		return nil
	}
	s.stats.Syncs.Add(uint64(len(cmds)))
	var failure error
	for i, r := range c.DoMulti(ctx, cmds...) {
		if i >= len(bs)+len(opsList) {
			if err := r.Error(); err != nil {
				failure = err
				s.keepPending(unbinds[i-len(bs)-len(opsList)])
			}
			continue
		}
		if i >= len(bs) {
			if err := r.Error(); err != nil {
				failure = err
				s.keepPendingOp(opsList[i-len(bs)])
			}
			continue
		}
		old, err := r.ToString()
		switch {
		case rueidis.IsRedisNil(err):
		case err != nil:
			failure = err
			s.keepPending(bs[i])
		case old != bs[i].host:
			// Another replica bound the key first: its binding holds.
			s.local.Bind(bs[i].pool, bs[i].key, old, bs[i].at)
		}
	}
	if len(ops) > 0 && failure == nil {
		s.log.Info("operator changes made while redis was unreachable are shared now", "changes", len(ops))
	}
	return failure
}

// writer sends Bind's writes in pipelined batches.
func (s *Store) writer() {
	defer s.wg.Done()
	batch := make([]binding, 0, writeBatch)
	for {
		select {
		case <-s.done:
			return
		case b := <-s.writes:
			batch = append(batch[:0], b)
		}
	more:
		for len(batch) < writeBatch {
			select {
			case b := <-s.writes:
				batch = append(batch, b)
			default:
				break more
			}
		}
		s.flush(batch)
	}
}

func (s *Store) flush(batch []binding) {
	c := s.current()
	if c == nil {
		for _, b := range batch {
			s.addPending(b)
		}
		return
	}
	life := s.lifetime()
	cmds := make(rueidis.Commands, len(batch))
	for i, b := range batch {
		switch {
		case b.unbind:
			cmds[i] = (*c).B().Del().Key(b.rkey).Build()
		case b.touchOnly:
			cmds[i] = (*c).B().Pexpire().Key(b.rkey).Milliseconds(life.Milliseconds()).Build()
		case b.ifAbsent:
			cmds[i] = (*c).B().Set().Key(b.rkey).Value(b.host).Nx().Px(life).Build()
		default:
			cmds[i] = (*c).B().Set().Key(b.rkey).Value(b.host).Px(life).Build()
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), s.upkeepTimeout())
	defer cancel()
	s.stats.Writes.Add(uint64(len(cmds)))
	var failure error
	for i, r := range (*c).DoMulti(ctx, cmds...) {
		// SET NX answers nil when the key has a host: not a failure.
		if err := r.Error(); err != nil && !rueidis.IsRedisNil(err) {
			failure = err
			s.addPending(batch[i])
			s.mu.Lock()
			s.touched.Remove(batch[i].rkey)
			s.mu.Unlock()
		}
	}
	if failure != nil {
		s.failed(failure)
	}
}

// loadReport is one replica's active sessions of a pool, by host ID.
type loadReport struct {
	At    int64          `json:"at"` // unix milliseconds
	Hosts map[string]int `json:"hosts"`
}

// syncLoads publishes this replica's active sessions per pool and host and
// reads the other replicas'. A replica that has not published for three
// sync intervals is left out (and its report deleted).
func (s *Store) syncLoads(ctx context.Context, c rueidis.Client, snap *affinity.Snapshot) error {
	now := time.Now()
	interval := s.cfg.SyncInterval
	var cmds rueidis.Commands
	for _, p := range snap.Pools {
		counts := map[string]int{}
		s.local.Load(p.Name, now, counts)
		report, _ := json.Marshal(loadReport{At: now.UnixMilli(), Hosts: counts})
		key := s.cfg.KeyPrefix + "l:" + p.Name
		cmds = append(cmds,
			c.B().Hset().Key(key).FieldValue().FieldValue(s.replica, string(report)).Build(),
			c.B().Pexpire().Key(key).Milliseconds((60 * interval).Milliseconds()).Build(),
			c.B().Hgetall().Key(key).Build())
	}
	if len(cmds) == 0 {
		return nil
	}
	s.stats.Syncs.Add(uint64(len(cmds)))
	results := c.DoMulti(ctx, cmds...)
	others := map[string]map[string]int{}
	var stale rueidis.Commands
	for i, p := range snap.Pools {
		for _, r := range results[3*i : 3*i+2] {
			if err := r.Error(); err != nil {
				return err
			}
		}
		all, err := results[3*i+2].AsStrMap()
		if err != nil {
			return err
		}
		sum := map[string]int{}
		for replica, v := range all {
			if replica == s.replica {
				continue
			}
			var lr loadReport
			if json.Unmarshal([]byte(v), &lr) != nil || now.Sub(time.UnixMilli(lr.At)) > 3*interval {
				stale = append(stale, c.B().Hdel().Key(s.cfg.KeyPrefix+"l:"+p.Name).Field(replica).Build())
				continue
			}
			for h, n := range lr.Hosts {
				sum[h] += n
			}
		}
		others[p.Name] = sum
	}
	s.mu.Lock()
	s.others = others
	s.mu.Unlock()
	if len(stale) > 0 {
		s.stats.Syncs.Add(uint64(len(stale)))
		for _, r := range c.DoMulti(ctx, stale...) {
			if err := r.Error(); err != nil {
				return err
			}
		}
	}
	return nil
}

// operatorWrite is one operator change: a drain until a deadline, or an
// undrain.
type operatorWrite struct {
	Pool     string    `json:"pool"`
	Host     string    `json:"host"`
	Draining bool      `json:"draining"`
	Deadline time.Time `json:"deadline,omitzero"`
}

func (o operatorWrite) field() string { return o.Pool + "/" + o.Host }

func (o operatorWrite) json() string {
	b, _ := json.Marshal(o)
	return string(b)
}

// PutOperatorState shares an operator change with every replica (the
// caller has put it in force on this one). When Redis does not take it,
// it is written when Redis answers again, and ErrNotShared says so.
func (s *Store) PutOperatorState(pool, host string, st affinity.OperatorState) error {
	o := operatorWrite{Pool: pool, Host: host, Draining: st.Draining, Deadline: st.Deadline}
	c := s.current()
	if c == nil {
		s.addPendingOp(o)
		return ErrNotShared
	}
	ctx, cancel := context.WithTimeout(context.Background(), s.upkeepTimeout())
	defer cancel()
	s.stats.Syncs.Add(1)
	if err := (*c).Do(ctx, (*c).B().Hset().Key(s.cfg.KeyPrefix+"o").FieldValue().FieldValue(o.field(), o.json()).Build()).Error(); err != nil {
		s.addPendingOp(o)
		s.failed(err)
		return errors.Join(ErrNotShared, err)
	}
	return nil
}

// keepPendingOp puts back an operator change that failed to be written,
// unless a newer one for the host came meanwhile.
func (s *Store) keepPendingOp(o operatorWrite) {
	s.mu.Lock()
	if _, ok := s.ops[o.field()]; !ok {
		s.ops[o.field()] = o
	}
	s.mu.Unlock()
}

func (s *Store) addPendingOp(o operatorWrite) {
	s.mu.Lock()
	s.ops[o.field()] = o
	s.mu.Unlock()
}

// syncOperatorStates reads the fleet's operator states (through the
// client-side cache: no traffic until one changes) and puts them in force
// when they differ from what this replica last read.
func (s *Store) syncOperatorStates(ctx context.Context, c rueidis.Client, e Engine) error {
	r := c.DoCache(ctx, c.B().Hgetall().Key(s.cfg.KeyPrefix+"o").Cache(), 10*s.cfg.SyncInterval)
	if !r.IsCacheHit() {
		s.stats.Syncs.Add(1)
	}
	all, err := r.AsStrMap()
	if err != nil {
		return err
	}
	states := map[string]map[string]affinity.OperatorState{}
	for _, v := range all {
		var o operatorWrite
		if json.Unmarshal([]byte(v), &o) != nil || o.Pool == "" || o.Host == "" {
			continue
		}
		if states[o.Pool] == nil {
			states[o.Pool] = map[string]affinity.OperatorState{}
		}
		states[o.Pool][o.Host] = affinity.OperatorState{Draining: o.Draining, Deadline: o.Deadline}
	}
	s.mu.Lock()
	same := s.lastOps != nil && maps.EqualFunc(states, s.lastOps, func(a, b map[string]affinity.OperatorState) bool {
		return maps.EqualFunc(a, b, func(x, y affinity.OperatorState) bool {
			return x.Draining == y.Draining && x.Deadline.Equal(y.Deadline)
		})
	})
	s.lastOps = states
	s.mu.Unlock()
	if !same {
		e.SetOperatorStates(states)
	}
	return nil
}

func netDialer(timeout time.Duration) net.Dialer {
	return net.Dialer{Timeout: max(time.Second, 50*timeout), KeepAlive: 30 * time.Second}
}
