#!/usr/bin/env bash
# Cold start: a broker whose data directory holds a GB-sized log (GB=10 by default:
# 10M × 1 KiB messages in one partition), killed with -9, restarted after the page cache is
# dropped (echo 3 > /proc/sys/vm/drop_caches: root), and once more with the cache warm.
# Ready = the first ApiVersions answer (a TCP connect succeeds as soon as the listener is
# bound, before the logs are recovered). One JSON line per repetition.
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
  for cache in cold warm; do
    [ "$cache" = cold ] && { sync; echo 3 > /proc/sys/vm/drop_caches; }
    python3 - "$FINSTREAM" "$work/data" "$(free_port)" "$cache" "$rep" "$segments" "$bytes" <<'PY' | tee -a "$OUT"
import json, socket, struct, subprocess, sys, time
binary, data, port, cache, rep, segments, size = sys.argv[1:8]
port = int(port)
def answered():
    s = socket.create_connection(("127.0.0.1", port), timeout=60)
    body = struct.pack(">hhih", 18, 0, 1, -1)  # ApiVersions v0, correlation id 1, no client id
    s.sendall(struct.pack(">i", len(body)) + body)
    ok = len(s.recv(8)) >= 8
    s.close()
    return ok
t0 = time.perf_counter()
p = subprocess.Popen([binary, "broker", "--listen", f"127.0.0.1:{port}", "--http", "off", "--data-dir", data],
                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
accepted = None
while True:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=0.05).close()
        accepted = accepted or time.perf_counter() - t0
        if answered():
            break
    except OSError:
        time.sleep(0.001)
ready = time.perf_counter() - t0
p.kill(); p.wait()
print(json.dumps({"rep": int(rep), "cache": cache, "log_bytes": int(size), "segments": int(segments),
                  "tcp_accept_ms": round(accepted * 1000, 1), "ready_ms": round(ready * 1000, 1)}))
PY
  done
done
python3 "$ROOT/bench/report.py"
