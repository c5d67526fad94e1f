package affinity

import (
	"encoding/base64"
	"math"
	"strings"
	"time"

	"github.com/cespare/xxhash/v2"
)

// bind places the session (its first choice with room) and issues its cookie.
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

// choose returns the session's primary and successor. Without a load cap
// they are its first two choices. With one, the primary is its first choice
// whose active sessions stay within ⌈c × mean⌉ after taking it, and the
// successor the choice after that; if none of its first MaxRank choices has
// room, the least loaded host (which always has) takes it.
func (e *Engine) choose(pool *Pool, hosts *HostSet, sid string, now time.Time) ([]Host, bool) {
	var rank [MaxRank]int
	k := pool.OverrideListLen
	if pool.LoadFactor > 0 {
		k = MaxRank
	}
	n := hosts.Rank(sessionKey(sid), rank[:k])
	pick := 0
	if pool.LoadFactor > 0 {
		load := map[string]int{}
		e.store.Load(pool.Name, now, load)
		limit := loadCap(pool.LoadFactor, hosts, load)
		pick = -1
		for i := 0; i < n; i++ {
			if load[hosts.At(rank[i]).ID]+1 <= limit {
				pick = i
				break
			}
		}
		if pick < 0 {
			least := 0
			for i, h := range hosts.hosts {
				if load[h.ID] < load[hosts.hosts[least].ID] {
					least = i
				}
			}
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
	return out, pick > 0
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
