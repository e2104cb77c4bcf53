#!/usr/bin/env bash
# End-to-end latency through `finstream broker` (segment files, fsync before acks=all answers
# and before consumers see a batch): RATE msgs/s of 100 B for SECONDS s from a librdkafka
# producer (acks=all, linger.ms=0) to a librdkafka consumer, timed from send until the
# consumer's poll returns the message; idle, then beside LOAD_RATE msgs/s of background
# produce load (another producer, acks=all, to another topic). One JSON line per run.
#   bash bench/e2e.sh                          # 1000 msgs/s, 30 s, load 100k msgs/s
source "$(dirname "$0")/lib.sh"
RATE=${RATE:-1000}
SECONDS_=${SECONDS_:-30}
LOAD_RATE=${LOAD_RATE:-100000}
OUT=$RESULTS/e2e.jsonl
build
: > "$OUT"
work=$(mktemp -d)
trap 'pkill -f "data-dir $work/data" 2>/dev/null || true; rm -rf "$work"' EXIT
for rep in $(seq 1 "$REPS"); do
  for load in 0 "$LOAD_RATE"; do
    port=$(free_port)
    "$FINSTREAM" broker --listen "127.0.0.1:$port" --http off --data-dir "$work/data" 2>"$work/broker.log" &
    pid=$!
    wait_port 127.0.0.1 "$port"
    res=$("$BENCH" e2e --bootstrap "127.0.0.1:$port" --rate "$RATE" --seconds "$SECONDS_" --load-rate "$load")
    echo "{\"rep\":$rep,\"result\":$res}" | tee -a "$OUT"
    kill -INT "$pid"; wait "$pid" || true
    rm -rf "$work/data"
  done
done
python3 "$ROOT/bench/report.py"
