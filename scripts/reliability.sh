#!/usr/bin/env bash
# The long runs of the reliability battery (docs/RELIABILITY.md); CI runs the same tests with
# their small defaults.
#   bash scripts/reliability.sh [SECONDS]
# SECONDS (default 600) is the budget: it sets the broker kill -9 cycles (one per ~2 s of a
# fifth of it), the consumer kill -9 cycles, the fuzzing time per target and the load run.
# The power cuts (200 per storage format) and the consumer-group rounds under CPU load
# (200 per client) run in full whatever the budget: FINSTREAM_POWER_CUTS and
# FINSTREAM_GROUP_ROUNDS change them. Needs root (FUSE mount for the power cuts).
set -euo pipefail
cd "$(dirname "$0")/.."
budget=${1:-600}
part=$((budget / 5))
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"
cargo build -q --release -p finstream -p finstream-bench

echo "== broker kill -9 loop: $((part / 2)) cycles"
FINSTREAM_KILL_CYCLES=$((part / 2)) cargo test -q --release --test reliability \
  broker_kill_9 -- --nocapture 2>&1 | grep -E "kills:|test result|panicked"

echo "== consumer kill -9 loop: $((part / 3)) kills over $((part * 2000)) rows"
FINSTREAM_CONSUMER_KILLS=$((part / 3)) FINSTREAM_KILL_ROWS=$((part * 2000)) \
  cargo test -q --release --test consumer kill_9 2>&1 | grep -E "test result|panicked"

cuts=${FINSTREAM_POWER_CUTS:-200}
echo "== power cuts: $cuts per storage format"
FINSTREAM_POWER_CUTS=$cuts cargo test -q --release --test power_cut -- --nocapture 2>&1 \
  | grep -E "power cuts|test result|panicked"

group_rounds=${FINSTREAM_GROUP_ROUNDS:-200}
echo "== consumer groups under CPU load: $group_rounds rounds per client"
FINSTREAM_GROUP_ROUNDS=$group_rounds cargo test -q --release --test group_stability -- \
  --nocapture 2>&1 | grep -E "PASS|FAIL|test result|panicked"

echo "== full disk, graceful shutdown under load"
cargo test -q --release --test reliability -- full_disk graceful 2>&1 | grep -E "test result|panicked|SKIPPED"

echo "== fuzzing: $((part / 5)) s per target"
bash scripts/fuzz.sh $((part / 5))

echo "== load: 1000 idle connections, a slowloris, 50 producers"
data=$(mktemp -d)
trap 'kill "$broker" 2>/dev/null; rm -rf "$data"' EXIT
./target/release/finstream broker --listen 127.0.0.1:0 --http off --data-dir "$data" 2>"$data/log" &
broker=$!
for _ in $(seq 100); do grep -q 'listen=' "$data/log" && break; sleep 0.1; done
addr=$(grep -o 'listen=[0-9.:]*' "$data/log" | head -1 | cut -d= -f2)
./target/release/finstream-bench load --bootstrap "$addr" --broker-pid "$broker" \
  --seconds $((part / 10 > 5 ? part / 10 : 5))
