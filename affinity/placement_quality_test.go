package affinity

import (
	"fmt"
	"math"
	"slices"
	"sort"
	"testing"

	"github.com/cespare/xxhash/v2"
)

// This file measures placement quality beside two references implemented
// here: Maglev (table 65537, as Envoy's default) and a ring with 160 points
// per host (ketama-like). `make bench-placement` runs the benchmarks below on
// one million keys and docs/placement.md holds their figures; the tests run a
// smaller version of the same checks in `make test`.

// placer is what the quality checks need of an algorithm.
type placer interface {
	first(key uint64) int
}

type rendezvousPlacer struct{ r *Rendezvous }

func (p rendezvousPlacer) first(key uint64) int {
	var d [1]int
	p.r.Rank(key, d[:])
	return d[0]
}

// maglev is the reference Maglev: each host walks its own permutation of the
// table (offset, skip from two hashes of its id) and the hosts take turns
// claiming free entries, weighted by taking turns in proportion to weight.
type maglev struct{ table []int32 }

func newMaglev(hosts []Host, size int) *maglev {
	m := &maglev{table: make([]int32, size)}
	for i := range m.table {
		m.table[i] = -1
	}
	offset := make([]uint64, len(hosts))
	skip := make([]uint64, len(hosts))
	next := make([]uint64, len(hosts))
	maxW := uint32(0)
	for i, h := range hosts {
		offset[i] = xxhash.Sum64String("o"+h.ID) % uint64(size)
		skip[i] = xxhash.Sum64String("s"+h.ID)%uint64(size-1) + 1
		maxW = max(maxW, h.Weight)
	}
	filled := 0
	for iter := uint32(0); filled < size; iter++ {
		for i, h := range hosts {
			// Weighted Maglev: a host takes a turn in proportion to its weight.
			if uint64(iter%maxW) >= uint64(h.Weight) {
				continue
			}
			for {
				c := (offset[i] + next[i]*skip[i]) % uint64(size)
				next[i]++
				if m.table[c] < 0 {
					m.table[c] = int32(i)
					filled++
					break
				}
			}
			if filled == size {
				break
			}
		}
	}
	return m
}

func (m *maglev) first(key uint64) int { return int(m.table[key%uint64(len(m.table))]) }

// ring is the reference consistent-hash ring.
type ring struct {
	points []uint64
	owner  []int32
}

func newRing(hosts []Host, perHost int) *ring {
	type pt struct {
		at    uint64
		owner int32
	}
	var pts []pt
	for i, h := range hosts {
		for j := 0; j < perHost*int(h.Weight); j++ {
			pts = append(pts, pt{xxhash.Sum64String(fmt.Sprintf("%s-%d", h.ID, j)), int32(i)})
		}
	}
	slices.SortFunc(pts, func(a, b pt) int {
		switch {
		case a.at < b.at:
			return -1
		case a.at > b.at:
			return 1
		}
		return 0
	})
	r := &ring{}
	for _, p := range pts {
		r.points = append(r.points, p.at)
		r.owner = append(r.owner, p.owner)
	}
	return r
}

func (r *ring) first(key uint64) int {
	i := sort.Search(len(r.points), func(i int) bool { return r.points[i] >= key })
	if i == len(r.points) {
		i = 0
	}
	return int(r.owner[i])
}

// exactShare is each host's share of the key space computed from the
// structure (tables and rings allow it).
func (m *maglev) exactShare(n int) []float64 {
	s := make([]float64, n)
	for _, o := range m.table {
		s[o] += 1 / float64(len(m.table))
	}
	return s
}

func (r *ring) exactShare(n int) []float64 {
	s := make([]float64, n)
	for i := range r.points {
		prev := r.points[(i+len(r.points)-1)%len(r.points)]
		s[r.owner[i]] += float64(r.points[i]-prev) / math.Exp2(64)
	}
	return s
}

// peakOverMean of shares or counts.
func peakOverMean(xs []float64) float64 {
	var sum, peak float64
	for _, x := range xs {
		sum += x
		peak = max(peak, x)
	}
	return peak / (sum / float64(len(xs)))
}

// qualityKeys are the keys the checks place: hashes of random-looking ids.
func qualityKeys(n int) []uint64 {
	ks := make([]uint64, n)
	for i := range ks {
		ks[i] = xxhash.Sum64String(fmt.Sprintf("session-%d", i))
	}
	return ks
}

// sampledPeak places the keys and returns the peak/mean of the counts.
func sampledPeak(p placer, n int, keys []uint64) float64 {
	counts := make([]float64, n)
	for _, k := range keys {
		counts[p.first(k)]++
	}
	return peakOverMean(counts)
}

// moduloPeak is the floor: a perfectly uniform assignment of the same keys.
func moduloPeak(n int, keys []uint64) float64 {
	counts := make([]float64, n)
	for _, k := range keys {
		counts[mix64(k)%uint64(n)]++
	}
	return peakOverMean(counts)
}

// movedOnRemoval removes each of the given hosts in turn (the others stay)
// and returns the keys that changed host over the ideal (keys/N), averaged.
func movedOnRemoval(build func([]Host) placer, hosts []Host, removed []int, keys []uint64) float64 {
	before := build(hosts)
	owner := make([]string, len(keys))
	for i, k := range keys {
		owner[i] = hosts[before.first(k)].ID
	}
	var total float64
	for _, r := range removed {
		rest := slices.Delete(slices.Clone(hosts), r, r+1)
		after := build(rest)
		moved := 0
		for i, k := range keys {
			if rest[after.first(k)].ID != owner[i] {
				moved++
			}
		}
		total += float64(moved) / (float64(len(keys)) / float64(len(hosts)))
	}
	return total / float64(len(removed))
}

// movedOnAddition adds one host and returns keys moved over the ideal keys/(N+1).
func movedOnAddition(build func([]Host) placer, hosts []Host, keys []uint64) float64 {
	extra := NewHost("", "10.99.99.99:8080", 1)
	before, after := build(hosts), build(append(slices.Clone(hosts), extra))
	all := append(slices.Clone(hosts), extra)
	moved := 0
	for _, k := range keys {
		if all[after.first(k)].ID != hosts[before.first(k)].ID {
			moved++
		}
	}
	return float64(moved) / (float64(len(keys)) / float64(len(hosts)+1))
}

func buildRendezvous(h []Host) placer { return rendezvousPlacer{NewRendezvous(h)} }
func buildMaglev(h []Host) placer     { return newMaglev(h, 65537) }
func buildRing(h []Host) placer       { return newRing(h, 160) }

// spread picks k removal victims spread over the host list.
func spread(n, k int) []int {
	k = min(k, n)
	out := make([]int, k)
	for i := range out {
		out[i] = i * n / k
	}
	return out
}

// TestPlacementQuality checks the bounds of docs/placement.md on fewer keys
// (200,000) and hosts (10 and 100) than the full measurement.
func TestPlacementQuality(t *testing.T) {
	keys := qualityKeys(200_000)
	for _, n := range []int{10, 100} {
		hosts := hostsN(n)
		floor := moduloPeak(n, keys)
		if got := sampledPeak(buildRendezvous(hosts), n, keys); got > floor+0.02 {
			t.Errorf("N=%d: peak/mean %.3f, the uniform floor is %.3f", n, got, floor)
		}
		if got := movedOnRemoval(buildRendezvous, hosts, spread(n, 10), keys); got > 1.05 {
			t.Errorf("N=%d: removal moved %.3f × ideal", n, got)
		}
		if got := movedOnAddition(buildRendezvous, hosts, keys); got > 1.05 {
			t.Errorf("N=%d: addition moved %.3f × ideal", n, got)
		}
	}
	// Weights 1:2:4: each share within 2% of its weight's share.
	hosts := hostsN(3)
	for i, w := range []uint32{1, 2, 4} {
		hosts[i] = NewHost(hosts[i].ID, hosts[i].Address, w)
	}
	counts := make([]float64, 3)
	p := buildRendezvous(hosts)
	for _, k := range keys {
		counts[p.first(k)]++
	}
	for i, w := range []float64{1, 2, 4} {
		want := w / 7
		if got := counts[i] / float64(len(keys)); math.Abs(got-want)/want > 0.02 {
			t.Errorf("weight %v: share %.4f, want %.4f ± 2%%", w, got, want)
		}
	}
}

// BenchmarkPlacementQuality reports, for each algorithm and host count, the
// peak/mean share (sampled on one million keys, and exact where the structure
// allows), and the keys moved by one removal and one addition over the
// ideal. Run with -benchtime 1x.
func BenchmarkPlacementQuality(b *testing.B) {
	keys := qualityKeys(1_000_000)
	algs := []struct {
		name  string
		build func([]Host) placer
	}{{"rendezvous", buildRendezvous}, {"maglev-65537", buildMaglev}, {"ring-160", buildRing}}
	for _, n := range []int{10, 100, 1000} {
		hosts := hostsN(n)
		floor := moduloPeak(n, keys)
		for _, a := range algs {
			b.Run(fmt.Sprintf("%s/N=%d", a.name, n), func(b *testing.B) {
				for b.Loop() {
					p := a.build(hosts)
					b.ReportMetric(sampledPeak(p, n, keys), "peak/mean")
					b.ReportMetric(floor, "uniform-peak/mean")
					switch s := p.(type) {
					case *maglev:
						b.ReportMetric(peakOverMean(s.exactShare(n)), "exact-peak/mean")
					case *ring:
						b.ReportMetric(peakOverMean(s.exactShare(n)), "exact-peak/mean")
					}
					b.ReportMetric(movedOnRemoval(a.build, hosts, spread(n, 5), keys), "removal-moved/ideal")
					b.ReportMetric(movedOnAddition(a.build, hosts, keys), "addition-moved/ideal")
				}
			})
		}
	}
}

// BenchmarkPlacementWeights reports the largest relative error of a host's
// share against its weight's share, for weights 1:2:4, on one million keys.
func BenchmarkPlacementWeights(b *testing.B) {
	keys := qualityKeys(1_000_000)
	hosts := hostsN(3)
	weights := []uint32{1, 2, 4}
	for i, w := range weights {
		hosts[i] = NewHost(hosts[i].ID, hosts[i].Address, w)
	}
	algs := []struct {
		name  string
		build func([]Host) placer
	}{{"rendezvous", buildRendezvous}, {"maglev-65537", buildMaglev}, {"ring-160", buildRing}}
	for _, a := range algs {
		b.Run(a.name, func(b *testing.B) {
			for b.Loop() {
				p := a.build(hosts)
				counts := make([]float64, 3)
				for _, k := range keys {
					counts[p.first(k)]++
				}
				worst := 0.0
				for i, w := range weights {
					want := float64(w) / 7
					worst = max(worst, math.Abs(counts[i]/float64(len(keys))-want)/want)
				}
				b.ReportMetric(worst*100, "worst-share-error-%")
			}
		})
	}
}

// BenchmarkPlacementLookup is one lookup of a session id, hashing included.
func BenchmarkPlacementLookup(b *testing.B) {
	ids := make([]string, 1024)
	for i := range ids {
		ids[i] = NewSessionID()
	}
	for _, n := range []int{10, 100, 1000} {
		hosts := hostsN(n)
		hs := NewHostSet(hosts)
		mg, rg := newMaglev(hosts, 65537), newRing(hosts, 160)
		b.Run(fmt.Sprintf("rendezvous-top2/N=%d", n), func(b *testing.B) {
			b.ReportAllocs()
			var r [DefaultOverrideListLen]int
			for i := 0; b.Loop(); i++ {
				hs.Rank(sessionKey(ids[i&1023]), r[:])
			}
		})
		b.Run(fmt.Sprintf("maglev-65537/N=%d", n), func(b *testing.B) {
			for i := 0; b.Loop(); i++ {
				mg.first(sessionKey(ids[i&1023]))
			}
		})
		b.Run(fmt.Sprintf("ring-160/N=%d", n), func(b *testing.B) {
			for i := 0; b.Loop(); i++ {
				rg.first(sessionKey(ids[i&1023]))
			}
		})
	}
}

// BenchmarkPlacementBuild is the cost of a new host set (a change).
func BenchmarkPlacementBuild(b *testing.B) {
	for _, n := range []int{100, 1000} {
		hosts := hostsN(n)
		b.Run(fmt.Sprintf("rendezvous/N=%d", n), func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				NewHostSet(hosts)
			}
		})
	}
}
