# lifeline — build and test entry points. `make test` is what CI runs.
GO        ?= go
PKGS      ?= ./...
# -count=1 disables the test cache so every run exercises real sockets.
TESTFLAGS ?= -race -count=1 -timeout 20m
# Nested modules with their own go.mod (peer comparisons, real clients).
MODULES   := $(wildcard examples/interop)

.PHONY: test vet lint unit modules bench bench-keepalive fmt

# The soak runs last, alone on the machine (soak-race, soak-short).
test: vet lint unit stress modules cshim-python cshim-rust soak-race soak-short

vet:
	$(GO) vet $(PKGS)

# staticcheck is pinned as a tool in go.mod (and in each nested module).
lint:
	$(GO) tool staticcheck $(PKGS)

# Every package but the soak, which runs on its own at the end (its
# deadline figures are side by side with a control in the same process,
# but a machine starved by other tests leaves it little to measure).
SOAK      := ./internal/soak
# The allocation tests skip under the race detector (it changes the
# counts): they run once more without it.
unit:
	$(GO) test $(TESTFLAGS) $$($(GO) list $(PKGS) | grep -v '/internal/soak$$')
	$(GO) test -count=1 -run 'Allocs' ./dial ./retry

# The tests whose corners are races between goroutines — transport (its
# websocket session included), the C ABI, and dial's racing attempts —
# under the race detector STRESS_COUNT times over, beside STRESS_HOGS busy
# loops that take the CPU away at random moments, so that interleavings a
# quiet machine never schedules happen here first. Bounded: each go test
# run ends by STRESS_TIMEOUT (twice what transport takes on a quiet 2-core
# machine, 5.6 min in gate run 16: the tests are the bound, not a race with
# the clock). The hogs are killed on every way out (the
# trap runs on success, failure and interrupt). STRESS_SKIP leaves out what
# is not about interleavings and only costs time: the incident replays
# (load replays with their own latency figures, 2.5 of transport's 3
# minutes under -race; make unit runs them) and the static-archive build
# of the C tests (the same C tests as the shared library's), and the
# load-shedding figures (TestShedSlowRefusalsQueue, TestShedOverloadedUpstream):
# the queue and the arrival rate they count are the ones an open loop of
# calls builds, and hogs beside -race change the rate the client keeps up
# with between a control and its own half (CI, stop 27: 26 of 240 calls
# queued to their deadline against the control's 177 under stress beside
# cshim's tests, where the bound was an eighth (a quarter now); 1–9 in four -race runs of
# it alone beside three hogs). make unit runs them.
STRESS_COUNT   ?= 2
STRESS_HOGS    ?= 2
STRESS_TIMEOUT ?= 12m
STRESS_DIAL_TIMEOUT ?= 2m
STRESS_SKIP    ?= ^(TestIncidentReplay.*|TestCStaticArchive|TestShedSlowRefusalsQueue|TestShedOverloadedUpstream)$$
STRESS_PKGS    ?= ./transport ./cshim
# dial's race tests: the ones in dial/race_test.go and any named *Race*.
STRESS_DIAL_RUN ?= ^($(shell grep -ho '^func Test[A-Za-z0-9_]*' dial/race_test.go | sed 's/^func //' | paste -sd'|'))$$|Race
.PHONY: stress
stress:
	@hogs=""; \
	trap 'kill $$hogs 2>/dev/null; wait $$hogs 2>/dev/null' EXIT; \
	trap 'exit 130' INT TERM HUP; \
	for i in $$(seq $(STRESS_HOGS)); do (while :; do :; done) & hogs="$$hogs $$!"; done; \
	echo "stress: -race -count=$(STRESS_COUNT) beside $(STRESS_HOGS) CPU hogs (pids$$hogs)"; \
	$(GO) test -race -count=$(STRESS_COUNT) -timeout $(STRESS_TIMEOUT) -skip '$(STRESS_SKIP)' $(STRESS_PKGS); rc=$$?; \
	$(GO) test -race -count=$(STRESS_COUNT) -timeout $(STRESS_DIAL_TIMEOUT) -run '$(STRESS_DIAL_RUN)' ./dial || rc=1; \
	exit $$rc

# The chaos soak under the race detector, then without it (soak-short), for
# 30 seconds each at a rate calibrated to the machine. Its deadline bound
# is side by side: lifeline's overruns against a control's (plain net/http,
# gorilla and net.Dialer clients) in the same run; see internal/soak.
.PHONY: soak-race soak-short
soak-race:
	$(GO) test $(TESTFLAGS) -run '^TestSoak$$' -v $(SOAK)

soak-short:
	$(GO) test -count=1 -timeout 5m -run '^TestSoak$$' -v $(SOAK)

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

# The keep-alive GET's time against net/http, in rounds (see the script).
ROUNDS ?= 30
bench-keepalive:
	bash bench/keepalive-rounds.sh $(ROUNDS)

fmt:
	gofmt -l -w .

# The C ABI (cshim/): liblifeline.so and liblifeline.a next to the public
# header cshim/lifeline.h. cgo also writes a liblifeline.h of its own
# (declarations of the internal lifelinego_* exports): it is not the public
# header and is removed.
CSHIM_OUT ?= cshim
PYTHON    ?= /usr/bin/python3

.PHONY: cshim-shared cshim-archive cshim-python

cshim-shared:
	$(GO) build -buildmode=c-shared -o $(CSHIM_OUT)/liblifeline.so ./cshim
	@rm -f $(CSHIM_OUT)/liblifeline.h

cshim-archive:
	$(GO) build -buildmode=c-archive -o $(CSHIM_OUT)/liblifeline.a ./cshim
	@rm -f $(CSHIM_OUT)/liblifeline.h

# The Python ctypes binding's pytest suite, against a fresh liblifeline.so
# (test_faultproxy.py also builds examples/faultproxy with $(GO)).
# Without a C compiler or pytest it says so and skips, except under CI,
# where .ci/run installs both and a missing one is a failure. A run that
# collects no test (pytest's exit status 5) is a failure too.
cshim-python:
	@if ! command -v gcc >/dev/null 2>&1 || ! $(PYTHON) -c 'import pytest' >/dev/null 2>&1; then \
		if [ -n "$$CI" ]; then echo "cshim-python: gcc or pytest for $(PYTHON) missing (apt-get install gcc python3-pytest)"; exit 1; fi; \
		echo "cshim-python: SKIP: needs gcc and pytest for $(PYTHON) (apt-get install gcc python3-pytest)"; exit 0; \
	fi; \
	$(MAKE) --no-print-directory cshim-shared && \
	PYTHONDONTWRITEBYTECODE=1 GO=$(GO) LIFELINE_LIB=$(abspath $(CSHIM_OUT))/liblifeline.so $(PYTHON) -m pytest -q -p no:cacheprovider examples/cshim-python; \
	rc=$$?; if [ $$rc -eq 5 ]; then echo "cshim-python: pytest collected no tests"; exit 1; fi; exit $$rc

# The Rust crate over the C ABI (examples/cshim-rust, Rust std only, so
# offline) against a fresh liblifeline.so, linked from LIFELINE_LIB_DIR with
# an rpath. Bounded: the test run ends by CSHIM_RUST_TIMEOUT seconds.
# Without cargo it says so and skips, except under CI, where .ci/run
# installs Debian's cargo and a missing one is a failure.
CARGO ?= cargo
CSHIM_RUST_TIMEOUT ?= 600
.PHONY: cshim-rust
cshim-rust:
	@if ! command -v $(CARGO) >/dev/null 2>&1; then \
		if [ -n "$$CI" ]; then echo "cshim-rust: cargo missing (apt-get install cargo)"; exit 1; fi; \
		echo "cshim-rust: SKIP: needs cargo (apt-get install cargo, or rustup)"; exit 0; \
	fi; \
	$(MAKE) --no-print-directory cshim-shared && \
	cd examples/cshim-rust && LIFELINE_LIB_DIR=$(abspath $(CSHIM_OUT)) \
		timeout -k 10 $(CSHIM_RUST_TIMEOUT) $(CARGO) test --offline --quiet

# Fuzzing: every Fuzz target of FUZZPKGS for FUZZTIME each (make test runs
# their seed corpora, testdata/fuzz/, as ordinary tests).
FUZZTIME ?= 30s
# Minimizing a new input replays it many times: bounded, because some
# targets wait out their own limits on most inputs (FuzzServerReply*).
FUZZMINIMIZE ?= 10s
FUZZPKGS ?= ./dial ./transport ./internal/otelx ./cshim
.PHONY: fuzz
fuzz:
	@set -e; for p in $(FUZZPKGS); do \
		for f in $$(grep -ho '^func Fuzz[A-Za-z0-9_]*' $$p/*_test.go | sed 's/^func //'); do \
			echo "== $$p $$f"; \
			$(GO) test -run '^$$' -fuzz "^$$f$$" -fuzztime $(FUZZTIME) -fuzzminimizetime $(FUZZMINIMIZE) $$p; \
		done; \
	done

# Chaos soak: transport (h1, h2), a websocket session and a pool under
# random faults of every kind (kernel ones in the test's own network
# namespace: needs root, ip and nft) for SOAK_DURATION with SOAK_WORKERS
# concurrent callers starting SOAK_RATE calls per second (a fixed rate:
# no calibration), half through lifeline and half through the control; the
# strict form: every lifeline call within 100ms of its deadline (plus the
# scheduler's measured lag, capped), besides the side-by-side bound.
# make test runs it for 30s (soak-race, soak-short).
SOAK_DURATION ?= 10m
SOAK_WORKERS  ?= 3000
SOAK_RATE     ?= 3000
.PHONY: soak
soak:
	SOAK_STRICT=1 SOAK_DURATION=$(SOAK_DURATION) SOAK_WORKERS=$(SOAK_WORKERS) SOAK_RATE=$(SOAK_RATE) \
		$(GO) test -count=1 -timeout 0 -run '^TestSoak$$' -v ./internal/soak
