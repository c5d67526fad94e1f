package affinity

import "math"

// Rendezvous is weighted rendezvous (highest random weight) placement: every
// host scores every key with -weight/ln(u), u a uniform draw from hashing the
// key with the host's seed, and the key goes to the highest score. The answer
// depends on the host set alone, so replicas agree without talking; removing
// a host moves only the keys it won, each to its own runner-up, which is why
// the ranking doubles as the successor order.
type Rendezvous struct {
	hosts []Host
}

// NewRendezvous places keys over hosts.
func NewRendezvous(hosts []Host) *Rendezvous { return &Rendezvous{hosts: hosts} }

// Rank writes the indexes of the key's best len(dst) hosts into dst, best
// first, and returns the count written.
func (r *Rendezvous) Rank(key uint64, dst []int) int {
	const maxRank = 8
	var scores [maxRank]float64
	k := len(dst)
	if k > maxRank {
		k = maxRank
	}
	if k > len(r.hosts) {
		k = len(r.hosts)
	}
	if k == 0 {
		return 0
	}
	n := 0
	for i := range r.hosts {
		s := score(key, &r.hosts[i])
		// Insertion into the short sorted prefix; k is small.
		if n == k && s <= scores[n-1] {
			continue
		}
		j := n
		if n < k {
			n++
		} else {
			j = k - 1
		}
		for j > 0 && scores[j-1] < s {
			scores[j] = scores[j-1]
			dst[j] = dst[j-1]
			j--
		}
		scores[j] = s
		dst[j] = i
	}
	return n
}

// score is the host's weighted rendezvous score for the key.
func score(key uint64, h *Host) float64 {
	x := mix64(key ^ h.seed)
	// 53 random bits mapped into the open interval (0, 1).
	u := (float64(x>>11) + 0.5) / (1 << 53)
	return -float64(h.Weight) / math.Log(u)
}

// mix64 is the splitmix64 finaliser: a bijection that spreads every input bit
// over the whole output.
func mix64(x uint64) uint64 {
	x ^= x >> 30
	x *= 0xbf58476d1ce4e5b9
	x ^= x >> 27
	x *= 0x94d049bb133111eb
	x ^= x >> 31
	return x
}
