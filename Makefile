# lifeline — build and test entry points. `make test` is what CI runs.
GO        ?= go
PKGS      ?= ./...
# -count=1 disables the test cache so every run exercises real sockets.
TESTFLAGS ?= -race -count=1 -timeout 20m
# Nested modules with their own go.mod (peer comparisons, real clients).
MODULES   := $(wildcard examples/interop)

.PHONY: test vet lint unit modules bench fmt

test: vet lint unit modules

vet:
	$(GO) vet $(PKGS)

# staticcheck is pinned as a tool in go.mod (and in each nested module).
lint:
	$(GO) tool staticcheck $(PKGS)

unit:
	$(GO) test $(TESTFLAGS) $(PKGS)

modules:
	@set -e; for m in $(MODULES); do \
		echo "== $$m"; \
		(cd $$m && $(GO) vet ./... && $(GO) tool staticcheck ./... && $(GO) test $(TESTFLAGS) ./...); \
	done

# Benchmarks. Compare with benchstat, e.g.
#   make bench BENCH=Dial COUNT=10 > new.txt && go tool benchstat new.txt
BENCH ?= .
COUNT ?= 6
bench:
	$(GO) test -run '^$$' -bench '$(BENCH)' -benchmem -count $(COUNT) $(PKGS)

fmt:
	gofmt -l -w .
