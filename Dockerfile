# authproxy image: a static binary on distroless, running as UID 65532.
# Both base images are build arguments, so a build without registry access
# can substitute local ones (scripts/image-build.sh does).
ARG GO_IMAGE=docker.io/library/golang:1.26
ARG RUNTIME_IMAGE=gcr.io/distroless/static-debian12:nonroot

FROM ${GO_IMAGE} AS build
WORKDIR /src
ENV CGO_ENABLED=0 \
    GOFLAGS=-mod=readonly
# Module downloads get their own layer, rebuilt only when go.mod or go.sum
# change.
COPY go.mod go.sum ./
RUN go mod download
COPY . .
ARG VERSION=dev
RUN go build -trimpath -ldflags "-s -w -X main.version=${VERSION}" -o /out/authproxy .

FROM ${RUNTIME_IMAGE}
ARG VERSION=dev
LABEL org.opencontainers.image.title="authproxy" \
      org.opencontainers.image.description="OAuth2 client-credentials reverse-proxy sidecar" \
      org.opencontainers.image.version="${VERSION}"
COPY --from=build /out/authproxy /authproxy
USER 65532:65532
# 8080: proxy (LISTEN_ADDR, loopback by default); 9090: admin (ADMIN_ADDR).
EXPOSE 8080 9090
# Kubernetes ignores HEALTHCHECK and uses the probes in deploy/. The image has
# no shell or curl, so the binary checks /healthz on ADMIN_ADDR itself.
HEALTHCHECK --interval=10s --timeout=3s --start-period=5s --retries=3 \
    CMD ["/authproxy", "healthcheck"]
ENTRYPOINT ["/authproxy"]
