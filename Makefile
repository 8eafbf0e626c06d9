# Interview control plane. `make help` lists the targets.
GO      ?= go
BIN     := bin
PG      := scripts/pg.sh
PROMTOOL ?= promtool

.PHONY: help build run test vet lint fmt-check promtool-check generate pg-start pg-stop clean

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-15s %s\n", $$1, $$2}'

build: ## build bin/controller and bin/sessionvm
	$(GO) build -o $(BIN)/controller ./cmd/controller
	$(GO) build -o $(BIN)/sessionvm ./cmd/sessionvm

run: build pg-start ## run the controller locally: local provider, simulated interviewer, private PostgreSQL
	@scripts/run.sh

test: pg-start fmt-check vet lint promtool-check ## gofmt, go vet, golangci-lint, promtool, and every test (race detector on) against the private PostgreSQL
	TEST_DATABASE_URL="$$($(PG) url)" $(GO) test -race -count=1 -timeout 15m -skip '^TestChaos$$' ./...
	@$(MAKE) --no-print-directory chaos
	@$(MAKE) --no-print-directory browser-test

vet: ## go vet
	$(GO) vet ./...

lint: ## golangci-lint, pinned in tools/go.mod (built from source on first use)
	$(GO) tool -modfile=tools/go.mod golangci-lint run ./...

generate: ## regenerate pkg/controlapi/apigen from api/openapi.yaml (a test checks it is current)
	$(GO) generate ./pkg/controlapi/apigen

promtool-check: ## promtool: check fly/alerts.yml and run its unit tests fly/alerts_test.yml
	@command -v $(PROMTOOL) >/dev/null 2>&1 || { echo "promtool-check: $(PROMTOOL) not found. It comes with Debian's prometheus package:" \
		"apt-get install --no-install-recommends prometheus (.ci/run installs it without starting the service)." >&2; exit 1; }
	$(PROMTOOL) check rules fly/alerts.yml
	$(PROMTOOL) test rules fly/alerts_test.yml

fmt-check: ## fail when a file is not gofmt-formatted
	@out="$$(gofmt -l cmd pkg migrations)"; if [ -n "$$out" ]; then echo "not gofmt-formatted:"; echo "$$out"; exit 1; fi

.PHONY: chaos browser-test
chaos: pg-start ## the chaos test alone (kills controllers and VMs; about a minute); prints its one-line summary
	@mkdir -p .data; TEST_DATABASE_URL="$$($(PG) url)" $(GO) test -race -count=1 -timeout 5m -run '^TestChaos$$' -v ./pkg/controller >.data/chaos.log 2>&1 \
		|| { tail -n 200 .data/chaos.log; echo "chaos test failed (whole log: .data/chaos.log)"; exit 1; }
	@grep '^chaos:' .data/chaos.log

browser-test: build pg-start ## the demo page in headless Chromium (Playwright, e2e/): the candidate's whole path
	@[ -d e2e/node_modules/playwright-core ] || (cd e2e && npm ci --no-audit --no-fund)
	node e2e/demo.test.mjs

.PHONY: bench
bench: pg-start build ## benchmarks next to their limits (bench/cmd/benchrun, ~12 min); regenerates docs/benchmarks.md
	$(GO) run ./bench/cmd/benchrun -db "$$($(PG) url)"

pg-start: ## start (or reuse) the private PostgreSQL in ./.data
	@$(PG) start

pg-stop: ## stop the private PostgreSQL
	@$(PG) stop

clean: pg-stop ## stop PostgreSQL and remove build output and ./.data
	rm -rf $(BIN) .data
