package affinity

import (
	"encoding/base64"
	"math"
	"strings"
	"time"

	"github.com/cespare/xxhash/v2"
)

// bind places the session (its first choice with room, or the less busy of
// the first two with a load reading) and issues its cookie.
func (e *Engine) bind(snap *Snapshot, pool *Pool, sess Session, o Outcome, r Reason, now time.Time) Decision {
	d := e.place(pool, sess.ID, o, r, now)
	if pool.LoadFactor > 0 {
		e.store.Seen(pool.Name, sess.ID, d.HostID, now)
	}
	if pool.Mode != ModeNative {
		e.issue(snap, pool, sess, &d, now)
	}
	return d
}

// place decides where key goes: its first choice with room, then its
// successors.
func (e *Engine) place(pool *Pool, key string, o Outcome, r Reason, now time.Time) Decision {
	order, overloaded := e.choose(pool, pool.placement(), key, now)
	d := Decision{Outcome: o, Reason: r, Pool: pool.Name, Hosts: make([]string, len(order)), HostID: order[0].ID, Overloaded: overloaded}
	for i, h := range order {
		d.Hosts[i] = h.Address
	}
	return d
}

// choose returns the session's primary and successor. Without a cap they
// are its first two choices. With bounded loads, a host takes the session
// only while its active sessions stay within ⌈c × mean⌉ after taking it;
// with a fresh load reading, only while its requests in flight are within
// factor × mean + 1, and of the first two such hosts in the session's order
// the less busy takes it (counting loadTie requests as none; ties: the
// earlier). The
// successor is the choice after the primary. If none of its first MaxRank
// choices passes, the least loaded host takes it.
func (e *Engine) choose(pool *Pool, hosts *HostSet, sid string, now time.Time) ([]Host, bool) {
	var rank [MaxRank]int
	c := placementCaps{inflight: e.freshLoad(pool, hosts, now)}
	k := pool.OverrideListLen
	if pool.LoadFactor > 0 || c.inflight != nil {
		k = MaxRank
	}
	n := hosts.Rank(sessionKey(sid), rank[:k])
	pick := 0
	if pool.LoadFactor > 0 {
		c.sessions = map[string]int{}
		e.store.Load(pool.Name, now, c.sessions)
		c.sessionCap = loadCap(pool.LoadFactor, hosts, c.sessions)
	}
	if c.inflight != nil {
		c.limit = pool.Load.Factor*c.inflight.mean + 1
	}
	if c.sessions != nil || c.inflight != nil {
		pick = c.pick(hosts, rank[:n])
		if pick < 0 {
			least := c.least(hosts)
			out := []Host{hosts.At(least)}
			for i := 0; i < n && len(out) < pool.OverrideListLen; i++ {
				if rank[i] != least {
					out = append(out, hosts.At(rank[i]))
				}
			}
			return out, true
		}
	}
	// The chosen host, then the choices after it, then those it skipped.
	out := make([]Host, 0, pool.OverrideListLen)
	for i := 0; i < n && len(out) < pool.OverrideListLen; i++ {
		out = append(out, hosts.At(rank[(pick+i)%n]))
	}
	// Overloaded: the first choice could not take the session (with a
	// load reading, a first choice that passed but was busier than the
	// second is a preference, not an overload).
	return out, pick > 0 && !c.passes(hosts, rank[0])
}

// placementCaps are what a host must pass to take a new session: room under
// bounded loads' session cap (sessions nil: none), and requests in flight
// within limit (inflight nil: no fresh reading).
type placementCaps struct {
	sessions   map[string]int
	sessionCap int
	inflight   *loadView
	limit      float64
}

// passes tells whether the host at index i of hosts may take the session.
func (c *placementCaps) passes(hosts *HostSet, i int) bool {
	if c.sessions != nil && c.sessions[hosts.At(i).ID]+1 > c.sessionCap {
		return false
	}
	return c.inflight == nil || c.inflight.load[i] <= c.limit
}

// loadTie is the requests in flight a host may carry and still count as
// idle when two choices are compared. One reading serves every placement
// until the next; in a lightly loaded pool, the host that read one request
// more than another at that instant would otherwise lose every session of
// which they are the first two choices until then, and the hosts that read
// none would fill up by chance. Above it, the less busy host wins.
const loadTie = 1

// pick returns the position in rank of the host that takes the session, -1
// when none passes: the first that passes, or with a load reading the less
// busy of the first two that pass (two choices, so that an idle host that
// just joined gets about twice its share until it is as busy as the others,
// not every new session).
func (c *placementCaps) pick(hosts *HostSet, rank []int) int {
	first := -1
	for i, h := range rank {
		if !c.passes(hosts, h) {
			continue
		}
		if first < 0 {
			if first = i; c.inflight == nil {
				return first
			}
			continue
		}
		if max(c.inflight.load[h]-loadTie, 0) < max(c.inflight.load[rank[first]]-loadTie, 0) {
			return i
		}
		return first
	}
	return first
}

// least is the index of the host that takes a session none of whose
// choices passes: with a load reading, the least busy of the hosts with
// room for a session; without one, the host with the fewest sessions.
func (c *placementCaps) least(hosts *HostSet) int {
	best := -1
	for i := range hosts.hosts {
		if c.inflight != nil {
			if c.sessions != nil && c.sessions[hosts.At(i).ID]+1 > c.sessionCap {
				continue
			}
			if best < 0 || c.inflight.load[i] < c.inflight.load[best] {
				best = i
			}
			continue
		}
		if best < 0 || c.sessions[hosts.At(i).ID] < c.sessions[hosts.At(best).ID] {
			best = i
		}
	}
	return max(best, 0)
}

// loadCap is the most active sessions a host may have after taking one more
// session: ⌈c × mean⌉ over hosts, the new session counted.
func loadCap(c float64, hosts *HostSet, load map[string]int) int {
	total := 0
	for _, h := range hosts.hosts {
		total += load[h.ID]
	}
	return int(math.Ceil(c * float64(total+1) / float64(hosts.Len())))
}

// issue signs a token binding the session to d's hosts, valid for one
// refresh interval (never past the absolute timeout, nor past the drain
// deadline of its host, so that Envoy hands it back in time), into
// d.SetCookie.
func (e *Engine) issue(snap *Snapshot, pool *Pool, sess Session, d *Decision, now time.Time) {
	end := sess.Start.Add(pool.AbsoluteTimeout)
	sess.IssuedAt = now
	sess.ExpiresAt = now.Add(pool.RefreshInterval)
	if sess.ExpiresAt.After(end) {
		sess.ExpiresAt = end
	}
	if deadline, ok := pool.Draining[d.HostID]; ok && sess.ExpiresAt.After(deadline) && deadline.After(now) {
		sess.ExpiresAt = deadline
	}
	sess.Pool = pool.Name
	if pool.Mode == ModeVerified {
		sess.Host, sess.Primary = strings.Join(d.Hosts, ","), base64.StdEncoding.EncodeToString([]byte(d.Hosts[0]))
	} else {
		sess.Host, sess.Primary = d.HostID, ""
	}
	token, err := snap.Codec.Sign(sess, now)
	if err != nil {
		// Signing with a validated key does not fail; route without a
		// cookie rather than fail the request if it ever does.
		return
	}
	// The cookie lives as long as the session may: the token inside it is
	// refreshed each interval.
	d.SetCookie = pool.Cookie.SetCookie(token, now, end)
	d.Session = sess
}

// overrideList is the override list of a session staying on own: own first,
// then the session's best choices among the others, where it moves if its
// own leaves.
func overrideList(hs *HostSet, sid string, own Host, length int) []string {
	var rank [MaxRank]int
	n := hs.Rank(sessionKey(sid), rank[:length])
	out := make([]string, 1, length)
	out[0] = own.Address
	for i := 0; i < n && len(out) < length; i++ {
		if h := hs.At(rank[i]); h.ID != own.ID {
			out = append(out, h.Address)
		}
	}
	return out
}

// sessionKey is the placement key of a session id.
func sessionKey(sid string) uint64 { return xxhash.Sum64String(sid) }
