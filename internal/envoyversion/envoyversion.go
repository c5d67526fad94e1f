// Package envoyversion names the Envoy release the project is tested with,
// in one place: the Makefile fetches it (reading the constant below), the
// binary reports it (envoy-affinity version), and the test harness expects
// it in its cache.
package envoyversion

// Tested is the Envoy release the end-to-end tests run. The Makefile reads
// this line as it is written: keep it one quoted version.
const Tested = "1.40.0"
