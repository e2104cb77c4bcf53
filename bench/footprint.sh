#!/usr/bin/env bash
# Footprint: time from `finstream broker` start to its first ApiVersions answer (ready; a
# TCP connect alone succeeds as soon as the listener is bound, before the logs are
# recovered), idle RSS, release binary size, cold and warm release build times (COLD=0
# skips the cold build).
source "$(dirname "$0")/lib.sh"
OUT=$RESULTS/footprint.jsonl
: > "$OUT"
if [ "${COLD:-1}" = 1 ]; then
  (cd "$ROOT" && cargo clean --release -q 2>/dev/null || true)
  start=$(date +%s.%N); build; cold=$(python3 -c "import time; print(round(time.time() - $start, 1))")
else
  build; cold=null
fi
touch "$ROOT/src/main.rs"
start=$(date +%s.%N); build; warm=$(python3 -c "import time; print(round(time.time() - $start, 1))")
size=$(stat -c %s "$FINSTREAM")
cp "$FINSTREAM" /tmp/finstream-stripped && strip /tmp/finstream-stripped && stripped=$(stat -c %s /tmp/finstream-stripped)
for rep in $(seq 1 "$REPS"); do
  dir=$(mktemp -d)
  python3 - "$FINSTREAM" "$dir" <<'PY' | tee -a "$OUT"
import json, socket, struct, subprocess, sys, time
binary, d = sys.argv[1], sys.argv[2]
def answered(port):
    c = socket.create_connection(("127.0.0.1", port), timeout=10)
    body = struct.pack(">hhih", 18, 0, 1, -1)  # ApiVersions v0, correlation id 1, no client id
    c.sendall(struct.pack(">i", len(body)) + body)
    ok = len(c.recv(8)) >= 8
    c.close()
    return ok
s = socket.socket(); s.bind(("127.0.0.1", 0)); port = s.getsockname()[1]; s.close()
t0 = time.perf_counter()
p = subprocess.Popen([binary, "broker", "--listen", f"127.0.0.1:{port}", "--http", "off", "--data-dir", d + "/data"],
                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
while True:
    try:
        if answered(port): break
    except OSError:
        time.sleep(0.0005)
ready_ms = (time.perf_counter() - t0) * 1000
time.sleep(3)
rss = next(int(l.split()[1]) for l in open(f"/proc/{p.pid}/status") if l.startswith("VmRSS"))
p.terminate(); p.wait()
print(json.dumps({"ready_ms": round(ready_ms, 1), "idle_rss_kb": rss}))
PY
  rm -rf "$dir"
done
echo "{\"binary_bytes\":$size,\"stripped_bytes\":$stripped,\"cold_build_s\":$cold,\"warm_build_s\":$warm}" | tee -a "$OUT"
python3 "$ROOT/bench/report.py"
