#!/usr/bin/env bash
# Broker CPU: the broker process's CPU-seconds (user + system, from /proc/PID/stat) while one
# librdkafka producer sends 1M × 100 B (acks=all, idempotent) and one consumer reads them back
# (`finstream-bench kafka`), for `finstream broker` (segment files, durable) and Tansu 0.6 on
# memory storage, alternating, REPS times each. One JSON line per run.
#   bash bench/broker_cpu.sh
source "$(dirname "$0")/lib.sh"
N=${N:-1000000}
OUT=$RESULTS/broker_cpu.jsonl
build
ensure_tansu
: > "$OUT"
ticks=$(getconf CLK_TCK)
cpu_s() { # pid -> utime + stime in seconds
  awk -v t="$ticks" '{ sub(/^.*\) /, ""); print ($12 + $13) / t }' "/proc/$1/stat"
}
for rep in $(seq 1 "$REPS"); do
  for kind in finstream tansu-memory; do
    port=$(free_port); dir=$(mktemp -d)
    case $kind in
      finstream) "$FINSTREAM" broker --listen "127.0.0.1:$port" --http off --data-dir "$dir/data" >"$dir/log" 2>&1 & ;;
      tansu-memory) tansu broker --storage-engine memory://tansu/ --listener-url "tcp://127.0.0.1:$port" \
                      --advertised-listener-url "tcp://127.0.0.1:$port" >"$dir/log" 2>&1 & ;;
    esac
    pid=$!
    wait_port 127.0.0.1 "$port"
    "$BENCH" create-topic --bootstrap "127.0.0.1:$port" --topic bench >/dev/null
    idle=$(cpu_s "$pid")
    res=$("$BENCH" kafka --bootstrap "127.0.0.1:$port" --topic bench --messages "$N" --size 100 --acks all --idempotent)
    busy=$(cpu_s "$pid")
    echo "{\"broker\":\"$kind\",\"rep\":$rep,\"messages\":$N,\"cpu_s\":$(python3 -c "print(round($busy - $idle, 3))"),\"result\":$res}" | tee -a "$OUT"
    kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true
    rm -rf "$dir"
  done
done
python3 "$ROOT/bench/report.py"
