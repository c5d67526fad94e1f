package affinity

import (
	"fmt"
	"strings"
	"testing"
	"time"
)

// envelopeSnapshot is one pool (mode, strict) whose sessions the upstream
// starts in mcp-session-id, wrapped in a signed envelope.
func envelopeSnapshot(t *testing.T, mode string, strict bool, hosts ...string) *Snapshot {
	t.Helper()
	var b strings.Builder
	fmt.Fprintf(&b, "keys: {env: K}\npools:\n  - name: mcp\n    mode: %s\n    strict: %v\n    session: {absolute_timeout: 1h}\n", mode, strict)
	b.WriteString("    key_sources: [{type: upstream_header, name: Mcp-Session-Id, envelope: signed}]\n    hosts:\n")
	for _, n := range hosts {
		fmt.Fprintf(&b, "      - {name: %s, address: '127.0.0.%s:80'}\n", n, strings.TrimPrefix(n, "web-"))
	}
	return mustBuild(t, b.String())
}

// mcp is a request of the pool carrying the session header (value "" for
// none).
func mcp(method, value string) Request {
	h := mapHeaders{":method": method}
	if value != "" {
		h["mcp-session-id"] = value
	}
	return Request{Pool: "mcp", Headers: h}
}

// TestEnvelope: the value the upstream sets reaches the client in a signed
// token that names the host that served; the token routes there and the
// upstream sees its own value again; nothing is stored; anything else the
// client sends (its raw value, a forged or foreign token) is a new
// session; a host that leaves moves only its sessions; a strict pool
// answers 503; the session ends at the absolute timeout.
func TestEnvelope(t *testing.T) {
	for _, mode := range []string{"opaque", "verified"} {
		t.Run(mode, func(t *testing.T) {
			clock := &fixedClock{t: t0}
			e := NewEngine(envelopeSnapshot(t, mode, false, "web-1", "web-2", "web-3"), clock.now)

			// initialize: no header; the service places it and wraps what
			// the response sets.
			d := e.Decide(mcp("POST", ""))
			if d.Outcome != OutcomeNew || d.EnvelopeHeader != "mcp-session-id" || !d.WantsResponse() || d.LearnHeader != "" {
				t.Fatalf("initialize: %+v", d)
			}
			r := e.Respond(&d, Upstream{Served: "127.0.0.3:80", Headers: mapHeaders{"mcp-session-id": "s-1"}})
			if len(r.SetHeaders) != 1 || r.SetHeaders[0][0] != "mcp-session-id" || r.SetHeaders[0][1] == "s-1" || len(r.SetHeaders[0][1]) > MaxTokenBytes {
				t.Fatalf("initialize's response: %+v", r)
			}
			token := r.SetHeaders[0][1]
			if _, ok := e.store.Binding("mcp", prefixUpstream+"s-1", clock.t); ok {
				t.Fatal("an enveloped value was stored")
			}
			sess, err := e.Snapshot().Codec.Verify(token, clock.t)
			if err != nil || sess.ID != "s-1" || !sess.Envelope || sess.Pool != "mcp" || !sess.ExpiresAt.Equal(t0.Add(time.Hour)) {
				t.Fatalf("envelope %+v, %v", sess, err)
			}
			if mode == "verified" && (!strings.HasPrefix(sess.Host, "127.0.0.3:80,") || sess.Primary != "MTI3LjAuMC4zOjgw") {
				t.Fatalf("verified envelope names %q, primary %q", sess.Host, sess.Primary)
			}

			forged := token[:len(token)-2] + "AA"
			cookieToken, _ := e.Snapshot().Codec.Sign(Session{ID: "s-1", Host: sess.Host, Start: t0, IssuedAt: t0, ExpiresAt: t0.Add(time.Hour), Pool: "mcp"}, t0)
			steps := []struct {
				name     string
				req      Request
				outcome  Outcome
				host     string // "" = any
				restored string // the value the upstream sees ("" = the header left as sent)
			}{
				{"the envelope", mcp("POST", token), OutcomePinned, "web-3", "s-1"},
				{"again, from the cache", mcp("POST", token), OutcomePinned, "web-3", "s-1"},
				{"its GET stream", mcp("GET", token), OutcomePinned, "web-3", "s-1"},
				{"the DELETE that ends it, on its host", mcp("DELETE", token), OutcomePinned, "web-3", "s-1"},
				{"the raw value", mcp("POST", "s-1"), OutcomeNew, "", ""},
				{"a forged envelope", mcp("POST", forged), OutcomeNew, "", ""},
				{"a cookie's token", mcp("POST", cookieToken), OutcomeNew, "", ""},
			}
			for _, st := range steps {
				d := e.Decide(st.req)
				restored := ""
				for _, kv := range d.SetHeaders {
					if kv[0] == "mcp-session-id" {
						restored = kv[1]
					}
				}
				if d.Outcome != st.outcome || (st.host != "" && d.HostID != st.host) || restored != st.restored || len(d.Hosts) == 0 || !d.WantsResponse() {
					t.Fatalf("%s: %+v", st.name, d)
				}
				if st.restored != "" {
					// The upstream repeats the value: the client gets its
					// own token back (a client keeps one session id).
					r := e.Respond(&d, Upstream{Served: "127.0.0.3:80", Headers: mapHeaders{"mcp-session-id": "s-1"}})
					if len(r.SetHeaders) != 1 || r.SetHeaders[0][1] != token {
						t.Fatalf("%s: the repeated value came back as %+v", st.name, r)
					}
				}
			}

			// web-3 leaves: its session goes to its next choice, the value
			// restored (an upstream that shares sessions goes on).
			e.Update(envelopeSnapshot(t, mode, false, "web-1", "web-2"))
			if d := e.Decide(mcp("POST", token)); d.Outcome != OutcomeRebound || d.Reason != ReasonHostLeft || d.HostID == "web-3" || d.SetHeaders[0][1] != "s-1" {
				t.Fatalf("host left: %+v", d)
			}
			e.Update(envelopeSnapshot(t, mode, true, "web-1", "web-2"))
			if d := e.Decide(mcp("POST", token)); d.Outcome != OutcomeRejected || d.Status != 503 || d.Body != StrictEnvelopeBody || d.SetCookie != "" {
				t.Fatalf("strict, host left: %+v", d)
			}

			// The session ends at the absolute timeout.
			e.Update(envelopeSnapshot(t, mode, false, "web-1", "web-2", "web-3"))
			clock.t = t0.Add(time.Hour)
			if d := e.Decide(mcp("POST", token)); d.Outcome != OutcomeNew || len(d.SetHeaders) != 0 {
				t.Fatalf("after the absolute timeout: %+v", d)
			}
		})
	}
}

// TestEnvelopeTooLong: a value too long to wrap is learned in the store,
// as without an envelope, and routes by what was learned.
func TestEnvelopeTooLong(t *testing.T) {
	e := NewEngine(envelopeSnapshot(t, "opaque", false, "web-1", "web-2", "web-3"), (&fixedClock{t: t0}).now)
	long := strings.Repeat("x", MaxEnvelopedValue+1)
	d := e.Decide(mcp("POST", ""))
	if r := e.Respond(&d, Upstream{Served: "127.0.0.2:80", Headers: mapHeaders{"mcp-session-id": long}}); len(r.SetHeaders) != 0 {
		t.Fatalf("wrapped a value of %d bytes: %+v", len(long), r)
	}
	if d := e.Decide(mcp("POST", long)); d.Outcome != OutcomePinned || d.HostID != "web-2" || len(d.SetHeaders) != 0 {
		t.Fatalf("the learned long value: %+v", d)
	}
}

// TestEnvelopeIsNotACookie: an envelope presented as the session cookie is
// an invalid cookie (its lifetime is the session's, not a refresh
// interval's).
func TestEnvelopeIsNotACookie(t *testing.T) {
	snap := mustBuild(t, "keys: {env: K}\npools:\n  - name: mcp\n    mode: opaque\n    key_sources: [{type: cookie}, {type: upstream_header, name: mcp-session-id, envelope: signed}]\n    hosts: [{name: web-1, address: '127.0.0.1:80'}]\n")
	e := NewEngine(snap, (&fixedClock{t: t0}).now)
	d := e.Decide(mcp("POST", ""))
	r := e.Respond(&d, Upstream{Served: "127.0.0.1:80", Headers: mapHeaders{"mcp-session-id": "s-1"}})
	if len(r.SetHeaders) != 1 {
		t.Fatalf("%+v", r)
	}
	got := e.Decide(Request{Pool: "mcp", CookieHeaders: []string{"affinity=" + r.SetHeaders[0][1]}})
	if got.Outcome != OutcomeNew || got.Reason != ReasonInvalidCookie {
		t.Fatalf("an envelope as the cookie: %+v", got)
	}
}

// TestLearnedBurstIsCapped: sessions whose key the upstream names are
// counted from their placement, so a burst of them placed before any
// response is back still keeps to the bounded-load cap; each response
// moves its count to the session's key (or drops it, when the response
// started no session).
func TestLearnedBurstIsCapped(t *testing.T) {
	for _, source := range []string{"{type: upstream_header, name: mcp-session-id, envelope: signed}", "{type: upstream_header, name: mcp-session-id}", "{type: app_cookie, name: JSESSIONID}"} {
		t.Run(source, func(t *testing.T) {
			snap := mustBuild(t, "keys: {env: K}\npools:\n  - name: mcp\n    mode: opaque\n    bounded_load: {factor: 1.25}\n    key_sources: ["+source+"]\n"+
				"    hosts: [{name: web-1, address: '127.0.0.1:80'}, {name: web-2, address: '127.0.0.2:80'}, {name: web-3, address: '127.0.0.3:80'}]\n")
			e := NewEngine(snap, (&fixedClock{t: t0}).now)
			var burst []Decision
			placed := map[string]int{}
			for range 300 {
				d := e.Decide(mcp("POST", ""))
				burst = append(burst, d)
				placed[d.HostID]++
			}
			for h, n := range placed {
				if n > 125 { // ⌈1.25 × 300 / 3⌉
					t.Errorf("%s took %d of 300 sessions placed at once, over the cap: %v", h, n, placed)
				}
			}
			load := func() int {
				l := map[string]int{}
				e.store.Load("mcp", t0, l)
				return l["web-1"] + l["web-2"] + l["web-3"]
			}
			if n := load(); n != 300 {
				t.Fatalf("%d sessions counted during the burst, want 300", n)
			}
			for i, d := range burst {
				up := Upstream{Served: d.Hosts[0], Headers: mapHeaders{}}
				if i%2 == 0 { // every other response starts its session
					up.Headers = mapHeaders{"mcp-session-id": fmt.Sprint("s-", i)}
					up.SetCookies = []string{fmt.Sprintf("JSESSIONID=s-%d; Path=/", i)}
				}
				e.Respond(&d, up)
			}
			if n := load(); n != 150 {
				t.Fatalf("%d sessions counted after the responses, want the 150 that started", n)
			}
		})
	}
}
