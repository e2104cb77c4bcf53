#!/usr/bin/env bash
# Pipeline: CSV of generated rows -> rows in PostgreSQL with `finstream all-in-one`, against
# the limit (psql \copy of the already-cleaned rows into the same table) and a cleaning-only
# run (parse + clean, no network), plus peak RSS at 1x and 5x the size.
#   bash bench/pipeline.sh                    # ROWS=1000000
#   RESULTS=$(mktemp -d) ROWS=50000 REPS=1 bash bench/pipeline.sh  # smoke run (report beside its results)
#   BASELINE=/path/to/old/finstream BASELINE_LABEL=14833a5 bash bench/pipeline.sh  # also an older
#                                             # build's all-in-one, alternating with this one's
source "$(dirname "$0")/lib.sh"
ROWS=${ROWS:-1000000}
PGURL_ADMIN=${PGURL_ADMIN:-postgres://postgres@127.0.0.1:5432/postgres}
OUT=$RESULTS/pipeline.jsonl
build
[ -x /usr/bin/time ] || { echo "installing GNU time" >&2; apt-get install -y -qq time >/dev/null; }
: > "$OUT"
machine_json > "$RESULTS/machine.json"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

"$FINSTREAM" generate --rows "$ROWS" --seed 1 --out "$work/tx.csv"
"$FINSTREAM" generate --rows $((ROWS * 5)) --seed 2 --out "$work/tx5.csv"
db=fs_bench_$$
psql "$PGURL_ADMIN" -qc "DROP DATABASE IF EXISTS $db" -c "CREATE DATABASE $db"
url=${PGURL_ADMIN%/*}/$db

peak_rss_kb() { # command... -> prints "seconds rss_kb"
  /usr/bin/time -f "%e %M" -o "$work/time" "$@" >"$work/out" 2>"$work/err" || { cat "$work/err" >&2; return 1; }
  cat "$work/time"
}

for rep in $(seq 1 "$REPS"); do
  # cleaning only
  read -r secs rss < <(peak_rss_kb "$FINSTREAM" produce --dry-run --csv "$work/tx.csv" --scaler "$ROOT/data/scaler.json")
  echo "{\"run\":\"clean-only\",\"rep\":$rep,\"rows\":$ROWS,\"seconds\":$secs,\"rows_per_s\":$(python3 -c "print($ROWS/$secs)"),\"peak_rss_kb\":$rss}" | tee -a "$OUT"

  # all-in-one, a fresh table and data dir each time
  psql "$url" -qc "DROP TABLE IF EXISTS transactions, finstream_offsets, finstream_dead_letters, finstream_gaps, finstream_schema_migrations"
  rm -rf "$work/data"
  read -r secs rss < <(peak_rss_kb "$FINSTREAM" all-in-one --csv "$work/tx.csv" --database-url "$url" --data-dir "$work/data" --scaler "$ROOT/data/scaler.json")
  n=$(psql "$url" -tAc "SELECT count(*) FROM transactions")
  [ "$n" = "$ROWS" ] || { echo "all-in-one loaded $n of $ROWS rows" >&2; exit 1; }
  echo "{\"run\":\"all-in-one\",\"rep\":$rep,\"rows\":$ROWS,\"seconds\":$secs,\"rows_per_s\":$(python3 -c "print($ROWS/$secs)"),\"peak_rss_kb\":$rss}" | tee -a "$OUT"

  if [ -n "${BASELINE:-}" ]; then
    psql "$url" -qc "DROP TABLE IF EXISTS transactions, finstream_offsets, finstream_dead_letters, finstream_gaps, finstream_schema_migrations"
    rm -rf "$work/data"
    read -r secs rss < <(peak_rss_kb "$BASELINE" all-in-one --csv "$work/tx.csv" --database-url "$url" --data-dir "$work/data" --scaler "$ROOT/data/scaler.json")
    echo "{\"run\":\"all-in-one-before\",\"label\":\"${BASELINE_LABEL:-baseline}\",\"rep\":$rep,\"rows\":$ROWS,\"seconds\":$secs,\"rows_per_s\":$(python3 -c "print($ROWS/$secs)"),\"peak_rss_kb\":$rss}" | tee -a "$OUT"
  fi

  # the limit: \copy of the same cleaned rows into the same (emptied) table
  psql "$url" -qc "\\copy transactions (amount, description) TO '$work/clean.csv' WITH (FORMAT csv)"
  psql "$url" -qc "TRUNCATE transactions"
  start=$(date +%s.%N)
  psql "$url" -qc "\\copy transactions (amount, description) FROM '$work/clean.csv' WITH (FORMAT csv)"
  secs=$(python3 -c "import time; print(round(time.time() - $start, 3))")
  echo "{\"run\":\"psql-copy\",\"rep\":$rep,\"rows\":$ROWS,\"seconds\":$secs,\"rows_per_s\":$(python3 -c "print($ROWS/$secs)")}" | tee -a "$OUT"
done

# Memory flat in file size: the same pipeline on 5x the rows, as many times (one peak is a
# noisy figure: 1x runs alone range over ±15%).
for rep in $(seq 1 "$REPS"); do
psql "$url" -qc "DROP TABLE IF EXISTS transactions, finstream_offsets, finstream_dead_letters, finstream_gaps, finstream_schema_migrations"
rm -rf "$work/data"
read -r secs rss < <(peak_rss_kb "$FINSTREAM" all-in-one --csv "$work/tx5.csv" --database-url "$url" --data-dir "$work/data" --scaler "$ROOT/data/scaler.json")
echo "{\"run\":\"all-in-one-5x\",\"rep\":$rep,\"rows\":$((ROWS * 5)),\"seconds\":$secs,\"rows_per_s\":$(python3 -c "print($ROWS*5/$secs)"),\"peak_rss_kb\":$rss}" | tee -a "$OUT"
done
psql "$PGURL_ADMIN" -qc "DROP DATABASE IF EXISTS $db WITH (FORCE)"
python3 "$ROOT/bench/report.py"
