#!/usr/bin/env bash
# Latency: a trickle of RATE msgs/s for SECONDS s into `finstream all-in-one --serve`; time from
# send to the row committed in PostgreSQL (seen by polling the table every millisecond).
#   bash bench/latency.sh                      # 1000 msgs/s for 30 s
source "$(dirname "$0")/lib.sh"
RATE=${RATE:-1000}
SECONDS_=${SECONDS_:-30}
PGURL_ADMIN=${PGURL_ADMIN:-postgres://postgres@127.0.0.1:5432/postgres}
OUT=$RESULTS/latency.jsonl
build
: > "$OUT"
work=$(mktemp -d)
db=fs_lat_$$
psql "$PGURL_ADMIN" -qc "DROP DATABASE IF EXISTS $db" -c "CREATE DATABASE $db"
url=${PGURL_ADMIN%/*}/$db
printf 'Description,Amount\nwarm up,1.0\n' > "$work/one.csv"
for rep in $(seq 1 "$REPS"); do
  port=$(free_port)
  "$FINSTREAM" all-in-one --serve --http off --listen "127.0.0.1:$port" --csv "$work/one.csv" --database-url "$url" \
      --data-dir "$work/data$rep" --group "lat$rep" --scaler "$ROOT/data/scaler.json" >"$work/aio.log" 2>&1 &
  pid=$!
  wait_port 127.0.0.1 "$port"
  sleep 1
  res=$("$BENCH" latency --bootstrap "127.0.0.1:$port" --topic financial_transactions --database-url "$url" \
        --rate "$RATE" --seconds "$SECONDS_")
  echo "{\"rep\":$rep,\"result\":$res}" | tee -a "$OUT"
  kill -INT "$pid"; wait "$pid" || true
done
psql "$PGURL_ADMIN" -qc "DROP DATABASE IF EXISTS $db WITH (FORCE)"
rm -rf "$work"
python3 "$ROOT/bench/report.py"
