# Interview control plane. `make help` lists the targets.
GO      ?= go
BIN     := bin
DEPS    := scripts/deps.sh
# Two private PostgreSQL clusters (scripts/pg.sh): `make run`'s is durable;
# the tests' and benchmarks' (PG_CLUSTER=test, .data/pg-test) runs with
# durability off. PG_CLUSTER is passed on so that what the tests run
# (e2e/demo.test.mjs, benchrun) calls scripts/pg.sh for the same cluster.
PG      := scripts/pg.sh
PGT     := PG_CLUSTER=test scripts/pg.sh
PROMTOOL ?= promtool

.PHONY: help build run webhook-receiver test vet lint fmt-check promtool-check generate pg-start pg-test-start pg-stop clean
.PHONY: deps-cc deps-promtool deps-chromium deps-e2e

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-15s %s\n", $$1, $$2}'

# sessionvm is built static (no cgo), as fly/sessionvm.Dockerfile builds it:
# a cgo build is dynamically linked, and the loader, libc and pthread thread
# starts cost it about 14% of its CPU from exec to ready. Unlike the image,
# bin/sessionvm keeps its full paths, symbol table and DWARF (-s -w made no
# measurable difference to its start; perf and delve need them).
build: ## build bin/controller and bin/sessionvm
	$(GO) build -o $(BIN)/controller ./cmd/controller
	CGO_ENABLED=0 $(GO) build -o $(BIN)/sessionvm ./cmd/sessionvm

run: build pg-start ## run the controller locally: local provider, simulated interviewer, private PostgreSQL
	@scripts/run.sh

webhook-receiver: build ## beside a running `make run`: register a local webhook receiver for its dev tenant and print each verified event
	@test -s .data/dev-token || { echo "no .data/dev-token: start \`make run\` first"; exit 1; }
	TOKEN="$$(cat .data/dev-token)" $(BIN)/controller webhooks receive --api "http://$${LISTEN_ADDR:-127.0.0.1:8080}"

test: pg-test-start deps-cc deps-promtool fmt-check vet lint promtool-check ## gofmt, go vet, golangci-lint, promtool, and every test (race detector on) against the test PostgreSQL; installs what it lacks
	TEST_DATABASE_URL="$$($(PGT) url)" $(GO) test -race -count=1 -timeout 15m -skip '^TestChaos$$' ./...
	@$(MAKE) --no-print-directory chaos
	@$(MAKE) --no-print-directory browser-test

vet: ## go vet
	$(GO) vet ./...

lint: ## golangci-lint, pinned in tools/go.mod (built from source on first use)
	$(GO) tool -modfile=tools/go.mod golangci-lint run ./...

generate: ## regenerate pkg/controlapi/apigen from api/openapi.yaml (a test checks it is current)
	$(GO) generate ./pkg/controlapi/apigen

promtool-check: deps-promtool ## promtool: check fly/alerts.yml and run its unit tests fly/alerts_test.yml
	$(PROMTOOL) check rules fly/alerts.yml
	$(PROMTOOL) test rules fly/alerts_test.yml

fmt-check: ## fail when a file is not gofmt-formatted
	@out="$$(gofmt -l cmd pkg migrations)"; if [ -n "$$out" ]; then echo "not gofmt-formatted:"; echo "$$out"; exit 1; fi

.PHONY: chaos browser-test
chaos: pg-test-start deps-cc ## the chaos test alone (kills controllers and VMs; about a minute); prints its one-line summary
	@mkdir -p .data; TEST_DATABASE_URL="$$($(PGT) url)" $(GO) test -race -count=1 -timeout 5m -run '^TestChaos$$' -v ./pkg/controller >.data/chaos.log 2>&1 \
		|| { tail -n 200 .data/chaos.log; echo "chaos test failed (whole log: .data/chaos.log)"; exit 1; }
	@grep '^chaos:' .data/chaos.log

browser-test: build pg-test-start deps-chromium deps-e2e ## the demo page in headless Chromium (Playwright, e2e/): the candidate's whole path
	PG_CLUSTER=test node e2e/demo.test.mjs

.PHONY: bench
bench: pg-test-start build ## benchmarks next to their limits (bench/cmd/benchrun, ~12 min); regenerates docs/benchmarks.md
	PG_CLUSTER=test $(GO) run ./bench/cmd/benchrun -db "$$($(PGT) url)"

pg-start: ## start (or reuse) make run's durable PostgreSQL in ./.data/pg
	@$(PG) start

pg-test-start: ## start (or reuse) the tests' PostgreSQL in ./.data/pg-test (durability off)
	@$(PGT) start

pg-stop: ## stop both private PostgreSQL clusters
	@$(PG) stop
	@$(PGT) stop

clean: pg-stop ## stop PostgreSQL and remove build output and ./.data
	rm -rf $(BIN) .data

# Tools the targets need, installed by scripts/deps.sh when missing (as
# root, from Debian; otherwise it says what to install). No-ops when present.
deps-cc:
	@$(DEPS) cc
deps-promtool:
	@command -v $(PROMTOOL) >/dev/null 2>&1 || $(DEPS) promtool
deps-chromium:
	@$(DEPS) chromium
deps-e2e:
	@$(DEPS) e2e
