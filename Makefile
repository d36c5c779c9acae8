# lifeline — build and test entry points. `make test` is what CI runs.
GO      ?= go
PKGS    ?= ./...
# Count 1 disables the test cache so every run exercises real sockets.
TESTFLAGS ?= -race -count=1 -timeout 20m

.PHONY: test vet unit bench fmt tidy

test: vet unit

vet:
	$(GO) vet $(PKGS)

unit:
	$(GO) test $(TESTFLAGS) $(PKGS)

# Benchmarks: compare against net.Dialer, backoff/v4 and puddle with benchstat, e.g.
#   make bench BENCH=. COUNT=10 > new.txt && benchstat new.txt
BENCH ?= .
COUNT ?= 6
bench:
	$(GO) test -run '^$$' -bench '$(BENCH)' -benchmem -count $(COUNT) $(PKGS)

fmt:
	gofmt -l -w .
