#!/usr/bin/env bash
# Cold start: a broker whose data directory holds a GB-sized log (GB=10 by default:
# 10M × 1 KiB messages in one partition), killed with -9, restarted after the page cache is
# dropped (echo 3 > /proc/sys/vm/drop_caches: root), and once more with the cache warm.
# Ready = the first ApiVersions answer (a TCP connect succeeds as soon as the listener is
# bound, before the logs are recovered). Each repetition times both recovery paths of the same
# binary and log: `scan` (the segment summaries removed first, so every batch header is walked,
# as before summaries existed) and `summaries` (closed segments read from <base>.headers).
# One JSON line per measurement.
source "$(dirname "$0")/lib.sh"
GB=${GB:-10}
OUT=$RESULTS/cold_start.jsonl
build
work=$(mktemp -d)
trap 'pkill -9 -f "data-dir $work/data" 2>/dev/null || true; rm -rf "$work"' EXIT
port=$(free_port)
"$FINSTREAM" broker --listen "127.0.0.1:$port" --http off --data-dir "$work/data" 2>/dev/null &
wait_port 127.0.0.1 "$port"
"$BENCH" kafka --bootstrap "127.0.0.1:$port" --topic big --messages $((GB * 1000000)) --size 1024 --acks 1 >/dev/null
pkill -9 -f "data-dir $work/data"; sleep 1
segments=$(ls "$work/data/logs/big-0" | grep -c '\.log$')
bytes=$(du -sb "$work/data/logs" | cut -f1)
: > "$OUT"
for rep in $(seq 1 "$REPS"); do
  for recovery in scan summaries; do
    for cache in cold warm; do
      # the scan path writes the summaries again: remove them before each of its starts
      [ "$recovery" = scan ] && rm -f "$work"/data/logs/big-0/*.headers
      [ "$cache" = cold ] && { sync; echo 3 > /proc/sys/vm/drop_caches; }
      python3 "$ROOT/bench/broker_start.py" "$FINSTREAM" "$work/data" --kill |
        python3 -c "import json, sys; r = json.load(sys.stdin); r.update(rep=$rep, recovery='$recovery', cache='$cache', log_bytes=$bytes, segments=$segments); print(json.dumps(r))" |
        tee -a "$OUT"
    done
  done
done
python3 "$ROOT/bench/report.py"
