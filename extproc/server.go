package extproc

import (
	"log/slog"
	"sync"
	"time"

	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"

	"github.com/envoy-affinity/envoy-affinity/affinity"
)

// Decider makes the affinity decision for a request, and judges what its
// response means; *affinity.Engine is one.
type Decider interface {
	// Decide places a request.
	Decide(affinity.Request) affinity.Decision
	// Respond is told what happened upstream to a request decided as d
	// (asked only when d.WantsResponse()) and returns what the response
	// carries back.
	Respond(d *affinity.Decision, up affinity.Upstream) affinity.Reply
}

var (
	_ Decider          = (*affinity.Engine)(nil)
	_ Observer         = noObserver{}
	_ affinity.Headers = headerList(nil)
)

// Observer is told what the server does, for metrics. Its methods are
// called on the hot path and must be cheap.
type Observer interface {
	// StreamOpened and StreamClosed bracket every stream.
	StreamOpened()
	StreamClosed()
	// Decided reports a decision and the time from the request-headers
	// message's arrival to its answer being ready.
	Decided(d affinity.Decision, took time.Duration)
	// Rebound reports a session re-bound in the response phase, to the
	// host that really served it.
	Rebound(pool string, reason affinity.Reason)
}

type noObserver struct{}

func (noObserver) StreamOpened()                            {}
func (noObserver) StreamClosed()                            {}
func (noObserver) Decided(affinity.Decision, time.Duration) {}
func (noObserver) Rebound(string, affinity.Reason)          {}

// Server implements Envoy's ExternalProcessor service.
type Server struct {
	extprocv3.UnimplementedExternalProcessorServer
	decider Decider
	log     *slog.Logger
	obs     Observer
	// answers holds the complete answer of an established session that
	// needs nothing but its hosts, by override list: the messages are
	// read-only once built, and gRPC may marshal one concurrently for many
	// streams. Bounded by the pools' host pairs; emptied if it grows past
	// maxAnswers.
	answersMu sync.RWMutex
	answers   map[answerKey]*extprocv3.ProcessingResponse
}

// NewServer returns a server that asks decider where each request goes.
func NewServer(decider Decider, log *slog.Logger) *Server {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Server{decider: decider, log: log, obs: noObserver{}}
}

// Observe makes the server report to obs (before it serves).
func (s *Server) Observe(obs Observer) { s.obs = obs }
