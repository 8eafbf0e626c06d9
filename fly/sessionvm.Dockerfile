# The session VM image: one Fly Machine per interview runs it. Build from
# the repository root:
#   docker build -f fly/sessionvm.Dockerfile -t interview-sessionvm .
FROM golang:1.26-bookworm AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
RUN CGO_ENABLED=0 go build -trimpath -o /out/sessionvm ./cmd/sessionvm

FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/sessionvm /sessionvm
EXPOSE 8080
ENTRYPOINT ["/sessionvm"]
