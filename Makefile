# lifeline — build and test entry points. `make test` is what CI runs.
GO        ?= go
PKGS      ?= ./...
# -count=1 disables the test cache so every run exercises real sockets.
TESTFLAGS ?= -race -count=1 -timeout 20m
# Nested modules with their own go.mod (peer comparisons, real clients).
MODULES   := $(wildcard examples/interop)

.PHONY: test vet unit modules bench fmt

test: vet unit modules

vet:
	$(GO) vet $(PKGS)

unit:
	$(GO) test $(TESTFLAGS) $(PKGS)

modules:
	@set -e; for m in $(MODULES); do \
		echo "== $$m"; \
		(cd $$m && $(GO) vet ./... && $(GO) test $(TESTFLAGS) ./...); \
	done

# Benchmarks. Compare with benchstat, e.g.
#   make bench BENCH=Dial COUNT=10 > new.txt && go run golang.org/x/perf/cmd/benchstat@latest new.txt
BENCH ?= .
COUNT ?= 6
bench:
	$(GO) test -run '^$$' -bench '$(BENCH)' -benchmem -count $(COUNT) $(PKGS)

fmt:
	gofmt -l -w .
