package affinity

import (
	"fmt"
	"math"
	"testing"
)

// keys returns n deterministic, well-spread placement keys.
func keys(n int) []uint64 {
	ks := make([]uint64, n)
	for i := range ks {
		ks[i] = mix64(uint64(i) + 0x9e3779b97f4a7c15)
	}
	return ks
}

func first(hs *HostSet, key uint64) string {
	var r [1]int
	hs.Rank(key, r[:])
	return hs.At(r[0]).ID
}

func TestRendezvousBalance(t *testing.T) {
	tests := []struct {
		name    string
		weights []uint32
		// tolerance on each host's share, relative to its weight's share
		tolerance float64
	}{
		{"3 equal", []uint32{1, 1, 1}, 0.03},
		{"10 equal", []uint32{1, 1, 1, 1, 1, 1, 1, 1, 1, 1}, 0.05},
		{"weights 1:2:4", []uint32{1, 2, 4}, 0.03},
	}
	const n = 200_000
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			hosts := hostsN(len(tt.weights))
			var total float64
			for i, w := range tt.weights {
				hosts[i] = NewHost(hosts[i].ID, hosts[i].Address, w)
				total += float64(w)
			}
			hs := NewHostSet(hosts)
			count := map[string]int{}
			for _, k := range keys(n) {
				count[first(hs, k)]++
			}
			for i, h := range hosts {
				want := float64(tt.weights[i]) / total
				got := float64(count[h.ID]) / n
				if math.Abs(got-want)/want > tt.tolerance {
					t.Errorf("host %d share %.4f, want %.4f ± %.0f%%", i, got, want, tt.tolerance*100)
				}
			}
		})
	}
}

func TestRendezvousRemovalMovesOnlyThatHost(t *testing.T) {
	for _, removed := range []int{0, 3, 9} {
		hosts := hostsN(10)
		before := NewHostSet(hosts)
		after := NewHostSet(append(append([]Host(nil), hosts[:removed]...), hosts[removed+1:]...))
		moved := 0
		for _, k := range keys(50_000) {
			var r [2]int
			before.Rank(k, r[:])
			was, successor := before.At(r[0]).ID, before.At(r[1]).ID
			now := first(after, k)
			switch {
			case was == hosts[removed].ID:
				moved++
				if now != successor {
					t.Fatalf("key of the removed host went to %s, its successor was %s", now, successor)
				}
			case now != was:
				t.Fatalf("key of %s moved to %s when %s was removed", was, now, hosts[removed].ID)
			}
		}
		if moved == 0 {
			t.Fatalf("removed host %d had no keys", removed)
		}
	}
}

func TestRendezvousAdditionMovesOnlyToNewHost(t *testing.T) {
	hosts := hostsN(11)
	before, after := NewHostSet(hosts[:10]), NewHostSet(hosts)
	gained := 0
	for _, k := range keys(50_000) {
		was, now := first(before, k), first(after, k)
		if now != was {
			if now != hosts[10].ID {
				t.Fatalf("key moved from %s to %s, not to the new host", was, now)
			}
			gained++
		}
	}
	if share := float64(gained) / 50_000; share < 0.08 || share > 0.10 {
		t.Fatalf("new host gained %.3f of the keys, want about 1/11", share)
	}
}

func TestRendezvousIndependentOfOrder(t *testing.T) {
	hosts := hostsN(7)
	reversed := make([]Host, len(hosts))
	for i, h := range hosts {
		reversed[len(hosts)-1-i] = h
	}
	a, b := NewHostSet(hosts), NewHostSet(reversed)
	for _, k := range keys(10_000) {
		var ra, rb [3]int
		a.Rank(k, ra[:])
		b.Rank(k, rb[:])
		for i := range ra {
			if a.At(ra[i]).ID != b.At(rb[i]).ID {
				t.Fatalf("choice %d differs with the host order", i)
			}
		}
	}
}

func TestRankShortSets(t *testing.T) {
	tests := []struct {
		hosts, want, got int
	}{{0, 2, 0}, {1, 2, 1}, {2, 2, 2}, {5, 3, 3}, {3, 0, 0}}
	for _, tt := range tests {
		hs := NewHostSet(hostsN(tt.hosts))
		dst := make([]int, tt.want)
		if n := hs.Rank(42, dst); n != tt.got {
			t.Errorf("%d hosts, rank %d: wrote %d, want %d", tt.hosts, tt.want, n, tt.got)
		}
		seen := map[int]bool{}
		for _, i := range dst[:tt.got] {
			if seen[i] {
				t.Errorf("%d hosts: index %d ranked twice", tt.hosts, i)
			}
			seen[i] = true
		}
	}
}

// BenchmarkRendezvousRank ranks keys: the primary and successor (k=2, the
// common case), and the full order bounded loads walk (k=MaxRank), over
// hosts of one weight and of three weights.
func BenchmarkRendezvousRank(b *testing.B) {
	for _, n := range []int{3, 10, 100} {
		for _, weights := range []int{1, 3} {
			hosts := hostsN(n)
			for i := range hosts {
				hosts[i].Weight = uint32(1 + i%weights)
			}
			hs := NewHostSet(hosts)
			for _, k := range []int{DefaultOverrideListLen, MaxRank} {
				name := fmt.Sprintf("hosts=%d/k=%d", n, k)
				if weights > 1 {
					name += fmt.Sprintf("/weights=%d", weights)
				}
				b.Run(name, func(b *testing.B) {
					b.ReportAllocs()
					var r [MaxRank]int
					for i := 0; b.Loop(); i++ {
						hs.Rank(uint64(i), r[:k])
					}
				})
			}
		}
	}
}
