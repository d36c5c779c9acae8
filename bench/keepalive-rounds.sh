#!/usr/bin/env bash
# keepalive-rounds.sh [ROUNDS] — BenchmarkKeepAliveGET's time ratio in rounds.
#
# On a shared or small machine the run-to-run noise of a benchmark (±5–10%)
# is larger than the few percent lifeline adds, so a benchstat of separate
# runs cannot tell 1.04 from 1.06. Here each round runs net/http's zero
# Transport, http.DefaultTransport's settings and lifeline back to back
# (20,000 requests each, the order rotating from round to round), and the
# ratios are taken within each round: the median and quartiles of
# lifeline/nethttp and lifeline/nethttp-default over the rounds.
# Run it on a quiet machine: make bench-keepalive ROUNDS=30
set -euo pipefail
rounds=${1:-30}
cd "$(dirname "$0")/.."
bin=$(mktemp -d)/transport.test
trap 'rm -rf "$(dirname "$bin")"' EXIT
go test -c -o "$bin" ./transport/
impls=(nethttp nethttp-default lifeline)
for r in $(seq 1 "$rounds"); do
	for k in 0 1 2; do
		i=${impls[$(((r + k) % 3))]}
		"$bin" -test.run '^$' -test.bench "^BenchmarkKeepAliveGET\$/^impl=$i\$" \
			-test.benchtime 20000x -test.benchmem | grep '^Benchmark' | sed "s/^/round=$r /"
	done
	printf '.' >&2
done | awk '
	{ split($2, a, "impl="); sub(/-[0-9]+$/, "", a[2]); ns[$1, a[2]] = $4; seen[$1] = 1 }
	function stats(base,   n, r, x, i, j, t) {
		n = 0
		for (r in seen) if (ns[r, base] > 0 && ns[r, "lifeline"] > 0) x[++n] = ns[r, "lifeline"] / ns[r, base]
		for (i = 2; i <= n; i++) { t = x[i]; for (j = i - 1; j >= 1 && x[j] > t; j--) x[j + 1] = x[j]; x[j + 1] = t }
		printf "lifeline / %-16s rounds %d  median %.3f  quartiles %.3f %.3f\n", base, n,
			(n % 2 ? x[(n + 1) / 2] : (x[n / 2] + x[n / 2 + 1]) / 2), x[int(n / 4) + 1], x[int(3 * n / 4) + 1]
	}
	END { printf "\n"; stats("nethttp"); stats("nethttp-default") }'
