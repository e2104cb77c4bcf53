#!/usr/bin/env bash
# CPU budget of the pipeline: CPU-seconds per stage for ROWS (1M) generated rows, each
# stage in its own process, from /proc and wait4 accounting (bench/cpu_budget.py), beside
# all-in-one and psql \copy of the same cleaned rows. REPS repetitions.
source "$(dirname "$0")/lib.sh"
ROWS=${ROWS:-1000000}
PGURL_ADMIN=${PGURL_ADMIN:-postgres://postgres@127.0.0.1:5432/postgres}
OUT=$RESULTS/cpu_budget.jsonl
build
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
"$FINSTREAM" generate --rows "$ROWS" --seed 1 --out "$work/tx.csv"
python3 "$ROOT/bench/cpu_budget.py" "$FINSTREAM" "$work/tx.csv" "$PGURL_ADMIN" "$ROWS" "$REPS" "$work" | tee "$OUT"
python3 "$ROOT/bench/report.py"
