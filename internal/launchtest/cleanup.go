package launchtest

import (
	"testing"

	"github.com/envoy-affinity/envoy-affinity/internal/launch"
)

// CloseWhenDone closes s when the test ends. Each of others gives a process
// the test started beside it, as it is then (nil: none), which is stopped
// first; when the test failed, the end of each one's log and of the
// service's is logged.
func CloseWhenDone(t testing.TB, s *launch.Stack, others ...func() *launch.Proc) {
	t.Cleanup(func() {
		for _, other := range others {
			if p := other(); p != nil {
				if t.Failed() {
					t.Logf("%s log:\n%s", p.Name, p.Tail())
				}
				p.Stop()
			}
		}
		if t.Failed() {
			t.Logf("envoy-affinity log:\n%s", s.Server.Tail())
		}
		s.Close()
	})
}
