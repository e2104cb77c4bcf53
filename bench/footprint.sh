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
  python3 "$ROOT/bench/broker_start.py" "$FINSTREAM" "$dir/data" --idle-rss | tee -a "$OUT"
  rm -rf "$dir"
done
echo "{\"binary_bytes\":$size,\"stripped_bytes\":$stripped,\"cold_build_s\":$cold,\"warm_build_s\":$warm}" | tee -a "$OUT"
python3 "$ROOT/bench/report.py"
