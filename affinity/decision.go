package affinity

// Outcome says what a decision did with the session.
type Outcome uint8

// Outcomes.
const (
	// OutcomePassThrough: no pool or no host for the request; Envoy's own
	// load balancer picks.
	OutcomePassThrough Outcome = iota
	// OutcomePinned: the session stays on its host (its cookie may be
	// refreshed).
	OutcomePinned
	// OutcomeNew: a new session was placed.
	OutcomeNew
	// OutcomeRebound: the session keeps its id but moves to another host.
	OutcomeRebound
	// OutcomeRejected: the session's host is gone and the pool is strict;
	// the request is answered with Decision.Status.
	OutcomeRejected
)

var outcomeNames = [...]string{"pass-through", "pinned", "new", "rebound", "rejected"}

func (o Outcome) String() string { return outcomeNames[o] }

// Reason says why a session is new, re-bound or refreshed.
type Reason uint8

// Reasons.
const (
	ReasonNone Reason = iota
	// ReasonNoCookie: the request carried no session cookie.
	ReasonNoCookie
	// ReasonInvalidCookie: the cookie was malformed, forged, signed by an
	// unknown key or too long.
	ReasonInvalidCookie
	// ReasonExpired: the token's exp passed. Within the absolute timeout
	// the session is refreshed, after it a new one starts.
	ReasonExpired
	// ReasonHostLeft: the session's host is no longer in the pool.
	ReasonHostLeft
	// ReasonNoPool: no pool serves the request's cluster.
	ReasonNoPool
	// ReasonNoHosts: the pool has no host.
	ReasonNoHosts
	// ReasonUnverified: in verified mode, a valid token reached the service,
	// so Envoy could not use it (its key not fetched yet, or clocks apart);
	// it is re-issued.
	ReasonUnverified
	// ReasonDraining: the session's host was draining and its deadline passed.
	ReasonDraining
	// ReasonIdle: the session was idle for longer than its idle timeout.
	ReasonIdle
	// ReasonNewKey: a key from a header, query or client address that the
	// store did not know.
	ReasonNewKey
	// ReasonNoKey: no source had a key and the pool has no cookie source
	// (a pool that learns keys from responses places the request).
	ReasonNoKey
	// ReasonServedElsewhere: Envoy's retry served the request on another
	// host than the one the decision named first (it could not be
	// reached), and the session was re-bound to that host.
	ReasonServedElsewhere
)

var reasonNames = [...]string{"", "no-cookie", "invalid-cookie", "expired", "host-left", "no-pool", "no-hosts", "unverified", "draining", "idle", "new-key", "no-key", "served-elsewhere"}

func (r Reason) String() string { return reasonNames[r] }

// reasonOverloaded labels a placement that skipped the session's first
// choice because it was full or busy.
const reasonOverloaded = "overloaded"

// ReasonLabel is the decision's reason as metrics and explanations name it:
// "overloaded" when bounded loads or the load signal skipped the first
// choice, else Reason.
func (d *Decision) ReasonLabel() string {
	if d.Overloaded {
		return reasonOverloaded
	}
	return d.Reason.String()
}

// Request is what a decision needs to know of an HTTP request.
type Request struct {
	// Pool names the pool explicitly ("" to choose by Cluster).
	Pool string
	// Cluster is the Envoy cluster the request is routed to ("" if unknown).
	Cluster string
	// CookieHeaders are the values of the request's Cookie headers.
	CookieHeaders []string
	// Headers reads other request headers (key sources); may be nil.
	Headers Headers
	// SourceAddress is the downstream connection's ip:port.
	SourceAddress string
}

// Decision is where a request goes and what the response must carry.
type Decision struct {
	Outcome Outcome
	Reason  Reason
	// Pool is the pool that decided ("" on pass-through).
	Pool string
	// Hosts are the override list: the addresses Envoy tries, primary
	// first. Read only: decisions of one session may share it.
	Hosts []string
	// OverrideList is Hosts joined with commas, as Envoy's override_host
	// reads it; set on the decisions of cached established sessions (empty
	// otherwise: join Hosts).
	OverrideList string
	// HostID is the ID of the primary host.
	HostID string
	// SetCookie is the Set-Cookie value to add to the response, or "" when
	// the client's cookie is still right (and always in native mode).
	SetCookie string
	// Status and Body answer the request in place of the upstream
	// (OutcomeRejected only).
	Status int
	Body   string
	// Overloaded is set when the session's first choice was full (bounded
	// loads) or busier than the pool allows or than its second (load) and
	// a later one took it.
	Overloaded bool
	// Session is the session the SetCookie token carries (when there is
	// one), for a re-bind in the response phase.
	Session Session
	// Key is the stored key a keyed decision came from (a header, query
	// parameter, client address or learned key, with its source's
	// prefix): a response another host served re-binds it there.
	Key string
	// LearnCookie names the application's session cookie: when the
	// response sets it, pass its value and the host that served the
	// response to Engine.Learn.
	LearnCookie string
	// LearnHeader names the upstream's session header (pools with an
	// upstream_header source): when the response sets it, its value is
	// bound to the host that served.
	LearnHeader string
	// EnvelopeHeader names the upstream's session header when the pool
	// wraps it (envelope: signed): when the response sets it, its value is
	// replaced by Reply.SetHeaders. EnvelopeToken and EnvelopeValue are
	// the envelope the request came with and the value it carried ("" for
	// none): an upstream repeating that value gets the same token back.
	EnvelopeHeader string
	EnvelopeToken  string
	EnvelopeValue  string
	// Placement is the id a new session of a pool that learns its keys
	// was counted under (bounded loads) until its response names the key;
	// Respond uncounts it.
	Placement string
	// SetHeaders are added to the request for the application (name,
	// value). Read only: decisions may share them.
	SetHeaders [][2]string
	// RemoveHeaders are the client's copies of the headers the pool sets
	// (upstream headers; output headers when the decision names no host,
	// else they are written over), removed from the request first. It is
	// the one list of client headers a pool removes. Read only: decisions
	// share it.
	RemoveHeaders []string
	// Output names the request headers the decision is written to besides
	// the metadata: set from Hosts when there are hosts, else removed.
	Output OutputHeaders
}

// StrictBody is the answer to a session whose host is gone in a strict pool.
const StrictBody = "503 Service Unavailable: the server holding this session is gone; the session cookie was cleared, the next request starts a new session\n"
