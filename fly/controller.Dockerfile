# The controller image. Build from the repository root:
#   docker build -f fly/controller.Dockerfile -t interview-controller .
FROM golang:1.26-bookworm AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
RUN CGO_ENABLED=0 go build -trimpath -o /out/controller ./cmd/controller

FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/controller /controller
EXPOSE 8080
ENTRYPOINT ["/controller", "serve"]
