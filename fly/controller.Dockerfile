# The controller image: one static binary on distroless, running as the
# unprivileged "nonroot" user (uid 65532). Build from the repository root:
#   docker build -f fly/controller.Dockerfile -t interview-controller .
# or deploy with: fly deploy . --config fly/controller.fly.toml
FROM golang:1.26 AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
# Only the sources the binary is built from: the repository root also holds
# a local PostgreSQL data directory (.data) that must never reach a build.
COPY cmd/ cmd/
COPY pkg/ pkg/
COPY migrations/ migrations/
RUN CGO_ENABLED=0 go build -trimpath -ldflags="-s -w" -o /out/controller ./cmd/controller

FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/controller /controller
USER nonroot:nonroot
EXPOSE 8080
ENTRYPOINT ["/controller", "serve"]
