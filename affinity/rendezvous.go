package affinity

import (
	"math"
	"slices"
)

// MaxRank is the longest successor order Rank computes.
const MaxRank = 8

// Rendezvous is weighted rendezvous (highest random weight) placement. Every
// host scores every key with -weight/ln(u), u a uniform draw from hashing the
// key with the host's seed, and the key goes to the highest score. The answer
// depends on the host set alone, so replicas agree without talking; removing
// a host moves only the keys it won, each to its own runner-up, which is why
// the ranking doubles as the successor order; adding one moves only the keys
// it wins. Shares follow the weights exactly in expectation.
//
// Speed: among hosts of equal weight the score grows with u alone, so each
// weight class is searched with one multiply-xorshift hash per host and no
// logarithm; only the few class leaders are scored. A lookup costs about a
// nanosecond per host.
type Rendezvous struct {
	classes []weightClass
}

// weightClass is the hosts of one weight, their seeds packed for a tight loop.
type weightClass struct {
	weight float64
	// seeds holds two words per host: the seed, and the odd multiplier
	// derived from it (see hostHash).
	seeds []uint64
	index []int // position of each host in the host set
}

// NewRendezvous places keys over hosts.
func NewRendezvous(hosts []Host) *Rendezvous {
	byWeight := map[uint32]*weightClass{}
	var weights []uint32
	for i, h := range hosts {
		c, ok := byWeight[h.Weight]
		if !ok {
			c = &weightClass{weight: float64(h.Weight)}
			byWeight[h.Weight] = c
			weights = append(weights, h.Weight)
		}
		c.seeds = append(c.seeds, h.seed, multiplier(h.seed))
		c.index = append(c.index, i)
	}
	slices.Sort(weights)
	r := &Rendezvous{}
	for _, w := range weights {
		r.classes = append(r.classes, *byWeight[w])
	}
	return r
}

// Rank writes the indexes of the key's best len(dst) hosts into dst (at most
// MaxRank), best first, and returns the count written.
func (r *Rendezvous) Rank(key uint64, dst []int) int {
	k := min(len(dst), MaxRank)
	if k == 0 {
		return 0
	}
	var (
		scores [MaxRank]float64
		n      int
	)
	for ci := range r.classes {
		c := &r.classes[ci]
		if k <= 2 {
			// The common case (primary and successor) kept in registers.
			b1, b2, i1, i2 := c.top2(key)
			if i1 >= 0 && insertTop(scores[:], dst, &n, k, score(b1, c.weight), c.index[i1]) && k == 2 && i2 >= 0 {
				insertTop(scores[:], dst, &n, k, score(b2, c.weight), c.index[i2])
			}
			continue
		}
		// The class's top k by raw hash; equal weights make that its top
		// k by score. Its leaders are then merged into the overall top k
		// by score until one does not make it (nor will later ones).
		var (
			hs  [MaxRank]uint64
			idx [MaxRank]int
			m   int
		)
		for i := 0; i+1 < len(c.seeds); i += 2 {
			insertTop(hs[:], idx[:], &m, k, hostHash(key, c.seeds[i], c.seeds[i+1]), i/2)
		}
		for i := 0; i < m && insertTop(scores[:], dst, &n, k, score(hs[i], c.weight), c.index[idx[i]]); i++ {
		}
	}
	return n
}

// insertTop offers value v of index i to a list kept in descending order:
// vals and idx hold its *n entries (at most k). It reports whether v made
// it into the list.
func insertTop[T uint64 | float64](vals []T, idx []int, n *int, k int, v T, i int) bool {
	if *n == k && v <= vals[k-1] {
		return false
	}
	j := *n
	if *n < k {
		*n++
	} else {
		j = k - 1
	}
	for j > 0 && vals[j-1] < v {
		vals[j], idx[j] = vals[j-1], idx[j-1]
		j--
	}
	vals[j], idx[j] = v, i
	return true
}

// top2 returns the class's two highest host hashes for key and their
// positions in the class (-1 where the class is smaller).
func (c *weightClass) top2(key uint64) (b1, b2 uint64, i1, i2 int) {
	i1, i2 = -1, -1
	seeds := c.seeds
	// The first host (or two) seed the pair; the loop then only compares.
	// Two hosts per iteration give the processor two independent chains.
	i := 0
	for ; i+3 < len(seeds) && i2 < 0; i += 2 {
		x := hostHash(key, seeds[i], seeds[i+1])
		if i1 < 0 || x > b1 {
			b2, i2, b1, i1 = b1, i1, x, i/2
		} else {
			b2, i2 = x, i/2
		}
	}
	for ; i+3 < len(seeds); i += 4 {
		x := hostHash(key, seeds[i], seeds[i+1])
		y := hostHash(key, seeds[i+2], seeds[i+3])
		if x > b2 {
			if x > b1 {
				b2, i2, b1, i1 = b1, i1, x, i/2
			} else {
				b2, i2 = x, i/2
			}
		}
		if y > b2 {
			if y > b1 {
				b2, i2, b1, i1 = b1, i1, y, i/2+1
			} else {
				b2, i2 = y, i/2+1
			}
		}
	}
	for ; i+1 < len(seeds); i += 2 {
		x := hostHash(key, seeds[i], seeds[i+1])
		switch {
		case i1 < 0 || x > b1:
			b2, i2, b1, i1 = b1, i1, x, i/2
		case i2 < 0 || x > b2:
			b2, i2 = x, i/2
		}
	}
	return b1, b2, i1, i2
}

// hostHash is the host's draw for a key: the key mixed with the host's seed,
// times the host's own odd multiplier. The key and the seed are already good
// hashes; a multiplier of its own per host keeps the draws of different
// hosts from moving together. Only the order of draws matters, and the high
// bits of the product depend on every bit of both factors.
func hostHash(key, seed, mult uint64) uint64 {
	return (key ^ seed) * mult
}

// multiplier derives a host's odd multiplier from its seed.
func multiplier(seed uint64) uint64 { return mix64(seed^0x9e3779b97f4a7c15) | 1 }

// score is the weighted rendezvous score of a hash: -w/ln(u), u the hash's
// top 53 bits mapped into the open interval (0, 1).
func score(x uint64, weight float64) float64 {
	u := (float64(x>>11) + 0.5) / (1 << 53)
	return -weight / math.Log(u)
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
