# The controller image: one static binary on distroless, running as the
# unprivileged "nonroot" user (uid 65532). Build from the repository root:
#   docker build -f fly/controller.Dockerfile -t interview-controller .
# or deploy with: fly deploy . --config fly/controller.fly.toml
# Base images are pinned by exact version and digest (see DEPLOY.md, "Base
# images", to check or update the digests): a rebuild gets the same
# toolchain and the same runtime files. The Go version matches go.mod.
FROM golang:1.26.8-bookworm@sha256:dc9ad6c05acc7a88e5b71bde60a5fe3bd4b9f0db209011711b464107438a8107 AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
# Only the sources the binary is built from: the repository root also holds
# a local PostgreSQL data directory (.data) that must never reach a build.
COPY cmd/ cmd/
COPY pkg/ pkg/
COPY migrations/ migrations/
RUN CGO_ENABLED=0 go build -trimpath -ldflags="-s -w" -o /out/controller ./cmd/controller

FROM gcr.io/distroless/static-debian12:nonroot@sha256:afa5c872c891853ca7fcf1f12c3edb23f7eeef36189728842dd51042ff57f7ab
COPY --from=build /out/controller /controller
USER nonroot:nonroot
# 8080: the public API (LISTEN_ADDR); 8081: the internal API of the session
# VMs (INTERNAL_ADDR, on the private network only); 9091: /metrics
# (METRICS_ADDR, scraped by Fly).
EXPOSE 8080 8081 9091
# A CMD, not an ENTRYPOINT: Fly runs the release_command ("/controller
# migrate") in place of the image's CMD but after its ENTRYPOINT; with an
# ENTRYPOINT ["/controller", "serve"] the release machine would run
# "/controller serve /controller migrate".
CMD ["/controller", "serve"]
