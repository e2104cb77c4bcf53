#!/usr/bin/env bash
# Instructions per Produce and per Fetch request in `finstream broker` (durable segment
# store, fsync per acks=-1 produce; syscalls are not counted), by callgrind: the broker
# runs under valgrind while `finstream-bench requests` sends a fixed sequence. Only the
# request path is counted (--toggle-collect: decoding and applying a request, a fetch's
# read, encoding the response), not start-up or background threads, whose spin-waits
# under valgrind vary from run to run. Three runs:
#   A: 50 produce   B: 150 produce   C: 150 produce + 100 fetch
# per produce = (B - A) / 100, per fetch = (C - B) / 100 (start-up and shutdown cancel).
# Instruction counts stay put on noisy machines where times do not.
#   bash bench/instructions.sh           # measure, record in results/instructions.jsonl
#   bash bench/instructions.sh --check   # fail if either is >20% over bench/instructions-baseline.json
source "$(dirname "$0")/lib.sh"
command -v valgrind >/dev/null || { echo "valgrind is missing (apt-get install valgrind)" >&2; exit 1; }
build
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

count() { # produce fetch -> prints the broker's total instructions
  local port; port=$(free_port)
  rm -rf "$work/data"
  valgrind --tool=callgrind --callgrind-out-file="$work/cg.out" -q \
    --toggle-collect='finstream_broker::connection::decode_and_apply' \
    --toggle-collect='finstream_broker::connection::encode_response' \
    --toggle-collect='finstream_broker::api::fetch::handle*' \
    "$FINSTREAM" broker --listen "127.0.0.1:$port" --http off --data-dir "$work/data" \
    --log-cleaner-enable false >"$work/broker.log" 2>&1 &
  local pid=$!
  for _ in $(seq 600); do
    (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && { exec 3>&- 3<&-; break; }
    sleep 0.1
  done
  "$BENCH" requests --bootstrap "127.0.0.1:$port" --produce "$1" --fetch "$2" >/dev/null \
    || { kill -TERM "$pid"; cat "$work/broker.log" >&2; return 1; }
  kill -TERM "$pid"; wait "$pid" || true
  grep -E '^(summary|totals):' "$work/cg.out" | head -1 | awk '{print $2}'
}

a=$(count 50 0); b=$(count 150 0); c=$(count 150 100)
produce=$(( (b - a) / 100 )); fetch=$(( (c - b) / 100 ))
line="{\"date\":\"$(date -u +%F)\",\"produce_instructions\":$produce,\"fetch_instructions\":$fetch,\"runs\":[$a,$b,$c]}"
echo "$line"
if [ "${1:-}" = "--check" ]; then
  python3 - "$ROOT/bench/instructions-baseline.json" "$produce" "$fetch" <<'PY'
import json, sys
base = json.load(open(sys.argv[1]))
got = {"produce_instructions": int(sys.argv[2]), "fetch_instructions": int(sys.argv[3])}
bad = [f"{k}: {got[k]:,} > 1.2 x {base[k]:,}" for k in got if got[k] > 1.2 * base[k]]
for k in got:
    print(f"{k}: {got[k]:,} (baseline {base[k]:,}, {got[k] / base[k]:.2f}x)")
if bad:
    sys.exit("instruction count grew more than 20%: " + "; ".join(bad))
PY
else
  echo "$line" >> "$RESULTS/instructions.jsonl"
  python3 "$ROOT/bench/report.py"
fi
