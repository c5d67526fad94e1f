module github.com/envoy-affinity/envoy-affinity/examples/envoy-gateway/standalone

go 1.26.0

require (
	github.com/envoy-affinity/envoy-affinity v0.0.0-00010101000000-000000000000
	gopkg.in/yaml.v3 v3.0.1
)

require (
	github.com/cespare/xxhash/v2 v2.3.0 // indirect
	github.com/golang-jwt/jwt/v5 v5.3.1 // indirect
	github.com/hashicorp/golang-lru/v2 v2.0.7 // indirect
	github.com/kr/text v0.2.0 // indirect
	golang.org/x/net v0.62.0 // indirect
)

replace github.com/envoy-affinity/envoy-affinity => ../../..
