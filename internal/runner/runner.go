// Package runner runs each pool's background work: the discovery of its
// hosts (discovery.go), the active health probes of them (health.go) and
// the reading of their requests in flight from the Envoys in front of them
// (load.go). Each is a per-pool task (workers.go): one per pool that
// configures one, restarted when a reload changes its configuration,
// stopped when the pool no longer has one.
package runner
