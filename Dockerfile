# envoy-affinity in a container: a static binary on distroless, run as a
# non-root user (examples/kubernetes runs it).
#
#   docker build -t ghcr.io/envoy-affinity/envoy-affinity .
#   docker run --rm ghcr.io/envoy-affinity/envoy-affinity keygen

FROM golang:1.26 AS build
WORKDIR /src
# Modules first: this layer is reused until go.mod or go.sum change.
COPY go.mod go.sum ./
RUN go mod download
COPY . .
# Static (no cgo), so it runs on an image without a C library.
RUN CGO_ENABLED=0 go build -trimpath -ldflags="-s -w" -o /out/envoy-affinity ./cmd/envoy-affinity

FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/envoy-affinity /envoy-affinity
# Numeric, so Kubernetes can check runAsNonRoot (65532 is distroless's nonroot).
USER 65532:65532
EXPOSE 9002 9003
ENTRYPOINT ["/envoy-affinity"]
