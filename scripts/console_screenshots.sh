#!/usr/bin/env bash
# Regenerates the console screenshots in docs/console/ from a live pipeline: all-in-one
# --serve loads data/sample.csv, then `finstream produce` sends it again every 15 s for
# about two minutes so the charts have something to show, hostile values and a poison
# message are added with kcat, and tests/console/console_check.mjs drives the pages in
# headless Chromium (the same checks as tests/console.rs) and takes the screenshots.
# Needs scripts/setup.sh done and PostgreSQL on 127.0.0.1:5432.
set -euo pipefail
cd "$(dirname "$0")/.."

cargo build --release -q
bin=$PWD/target/release/finstream
work=$(mktemp -d)
db=fs_console_demo
psql -h 127.0.0.1 -U postgres -q -c "DROP DATABASE IF EXISTS $db WITH (FORCE)" -c "CREATE DATABASE $db"
cleanup() {
  kill "${pid:-0}" 2>/dev/null || true
  wait 2>/dev/null || true
  psql -h 127.0.0.1 -U postgres -q -c "DROP DATABASE IF EXISTS $db WITH (FORCE)" || true
  rm -rf "$work"
}
trap cleanup EXIT

RUST_LOG=info "$bin" all-in-one --serve --listen 127.0.0.1:0 --http 127.0.0.1:0 \
  --csv data/sample.csv --database-url "postgres://postgres@127.0.0.1:5432/$db" \
  --data-dir "$work/data" 2> "$work/log" &
pid=$!
for _ in $(seq 100); do
  grep -q 'http=' "$work/log" && grep -q 'listen=' "$work/log" && break
  sleep 0.1
done
http=$(grep -o 'http=[0-9.:]*' "$work/log" | head -1 | cut -d= -f2)
kafka=$(grep -o 'listen=[0-9.:]*' "$work/log" | head -1 | cut -d= -f2)
echo "console on http://$http/, broker on $kafka"

for _ in $(seq 8); do
  sleep 15
  "$bin" produce --bootstrap-servers "$kafka" --topic financial_transactions --csv data/sample.csv > /dev/null
done
printf '%s|%s\n' '<img src=x onerror="window.__xss=2">' \
  '{"description":"<script>window.__xss=1</script>","amount":1.0}' |
  kcat -b "$kafka" -P -t financial_transactions -K'|' -H 'source_line=<b>9</b>'
printf '<svg onload=window.__xss=3>\n' | kcat -b "$kafka" -P -t financial_transactions
printf 'Description,Amount\nBad amount,abc\n' > "$work/bad.csv"
"$bin" produce --bootstrap-servers "$kafka" --topic financial_transactions --csv "$work/bad.csv" > /dev/null || true
sleep 5
node tests/console/console_check.mjs "http://$http" docs/console financial_transactions finstream
