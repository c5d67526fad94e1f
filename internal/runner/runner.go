// Package runner runs each pool's background work: the discovery of its
// hosts (discovery.go) and the active health probes of them (health.go).
// Both are per-pool tasks (workers.go): one per pool that configures one,
// restarted when a reload changes its configuration, stopped when the pool
// no longer has one.
package runner
