# The session VM image: one Fly Machine per interview runs it. One static
# binary on distroless, running as the unprivileged "nonroot" user (uid
# 65532). Build from the repository root:
#   docker build -f fly/sessionvm.Dockerfile -t interview-sessionvm .
# or build and push it to Fly's registry (see DEPLOY.md):
#   fly deploy . --config fly/sessionvm.fly.toml --build-only --push --image-label <label>
# Base images are pinned by exact version and digest (see DEPLOY.md, "Base
# images", to check or update the digests): a rebuild gets the same
# toolchain and the same runtime files. The Go version matches go.mod.
FROM golang:1.26.8-bookworm@sha256:dc9ad6c05acc7a88e5b71bde60a5fe3bd4b9f0db209011711b464107438a8107 AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
# Only the sources the binary is built from (see controller.Dockerfile).
COPY cmd/ cmd/
COPY pkg/ pkg/
RUN CGO_ENABLED=0 go build -trimpath -ldflags="-s -w" -o /out/sessionvm ./cmd/sessionvm

FROM gcr.io/distroless/static-debian12:nonroot@sha256:afa5c872c891853ca7fcf1f12c3edb23f7eeef36189728842dd51042ff57f7ab
COPY --from=build /out/sessionvm /sessionvm
USER nonroot:nonroot
# sessionvm listens on :SESSION_PORT (all addresses, the 6PN one included);
# the controller sets SESSION_PORT in every machine's config.
EXPOSE 8080
ENTRYPOINT ["/sessionvm"]
