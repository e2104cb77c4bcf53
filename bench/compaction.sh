#!/usr/bin/env bash
# Compaction: a GB log (BYTES) of 100 B values with 10% distinct keys is written to a topic
# with cleanup.policy=delete, and OLD_BYTES more, two days old, to a second topic; the
# broker restarts (fresh memory figures). A trickle producer (RATE msgs/s, acks=all) then
# measures its latency idle, and again while the topic is switched to compact and the
# second topic to a one-day retention: the cleaner's pass and retention's deletions run
# under it. The cleaner's own log line gives its throughput and key map; /proc gives the
# broker's peak memory before and after.
#   bash bench/compaction.sh                 # 1 GB, 3 reps, 64 MiB key map
#   REPS=1 DEDUPE_MB=8 TAG=-8mb bash bench/compaction.sh   # a key map too small for one pass
source "$(dirname "$0")/lib.sh"
BYTES=${BYTES:-1000000000}
OLD_BYTES=${OLD_BYTES:-300000000}
CODEC=${CODEC:-none}
RATE=${RATE:-500}
DEDUPE_MB=${DEDUPE_MB:-64}
OUT=$RESULTS/compaction${TAG:-}.jsonl
build
: > "$OUT"
work=$(mktemp -d)
hwm() { awk '/VmHWM/ {print $2 * 1024}' "/proc/$1/status"; }
start() {
  "$FINSTREAM" broker --listen "127.0.0.1:$port" --http off --data-dir "$work/data" \
      --log-cleaner-backoff-ms 1000 --log-retention-check-interval-ms 1000 --log-cleaner-dedupe-buffer-mb "$DEDUPE_MB" >>"$work/broker.log" 2>&1 &
  pid=$!
  wait_port 127.0.0.1 "$port"
}
for rep in $(seq 1 "$REPS"); do
  rm -rf "$work/data"; : > "$work/broker.log"
  port=$(free_port)
  start
  bs=127.0.0.1:$port
  "$FINSTREAM" topics --bootstrap-servers "$bs" create cc >/dev/null
  "$FINSTREAM" topics --bootstrap-servers "$bs" create old >/dev/null
  "$FINSTREAM" topics --bootstrap-servers "$bs" create lat >/dev/null
  fill=$("$BENCH" compact-fill --bootstrap "$bs" --topic cc --bytes "$BYTES" --codec "$CODEC")
  "$BENCH" compact-fill --bootstrap "$bs" --topic old --bytes "$OLD_BYTES" --age-ms 172800000 >/dev/null
  kill -TERM "$pid"; wait "$pid" || true
  start
  idle=$("$BENCH" trickle --bootstrap "$bs" --topic lat --rate "$RATE" --seconds 15)
  hwm_idle=$(hwm "$pid")
  ("$BENCH" trickle --bootstrap "$bs" --topic lat --rate "$RATE" --seconds 30 --dump "$work/busy.txt" > "$work/busy.json") &
  tpid=$!
  sleep 2
  "$FINSTREAM" topics --bootstrap-servers "$bs" alter cc --add-config cleanup.policy=compact >/dev/null
  "$FINSTREAM" topics --bootstrap-servers "$bs" alter old --add-config retention.ms=86400000 >/dev/null
  wait "$tpid"
  busy=$(cat "$work/busy.json")
  hwm_busy=$(hwm "$pid")
  kill -TERM "$pid"; wait "$pid" || true
  pass=$(python3 - "$work/broker.log" "$work/busy.txt" <<'PY'
import datetime, json, re, sys
lines = [l for l in open(sys.argv[1]) if ' compacted ' in l and 'topic=cc' in l]
def fields(l):
    return {k: float(v) for k, v in re.findall(r'(\w+)=([0-9.]+)', l)}
def end_ms(l):
    t = datetime.datetime.strptime(l.split()[0][:26], "%Y-%m-%dT%H:%M:%S.%f")
    return t.replace(tzinfo=datetime.timezone.utc).timestamp() * 1000
passes = [fields(l) for l in lines]
first = passes[0] if passes else {}
# the trickle's latencies while the first pass ran
window = []
if lines:
    end = end_ms(lines[0]); start = end - first["seconds"] * 1000
    for row in open(sys.argv[2]):
        at, us = map(int, row.split())
        if start <= at <= end:
            window.append(us)
window.sort()
p99 = window[round((len(window) - 1) * 0.99)] if window else None
print(json.dumps({"passes": len(passes), "first": first, "during_pass": {"messages": len(window), "p99_us": p99},
                  "read_bytes": sum(p.get("read_bytes", 0) for p in passes),
                  "seconds": sum(p.get("seconds", 0) for p in passes)}))
PY
)
  retention=$(grep -c "retention moved the log start.*topic=old\|topic=old.*retention moved" "$work/broker.log" || true)
  echo "{\"rep\":$rep,\"machine\":$(machine_json),\"bytes\":$BYTES,\"dedupe_mb\":$DEDUPE_MB,\"fill\":$fill,\"idle\":$idle,\"busy\":$busy,\"cleaner\":$pass,\"retention_moves\":$retention,\"hwm_idle\":$hwm_idle,\"hwm_busy\":$hwm_busy}" | tee -a "$OUT"
done
rm -rf "$work"
