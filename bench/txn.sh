#!/usr/bin/env bash
# Transactions: the same librdkafka producer idempotent and in transactions of TXN messages
# (acks=all, 100 B), commit latency, and the transactional topic read read_uncommitted vs
# read_committed, against `finstream broker` on a fresh data directory per rep and size.
#   bash bench/txn.sh                  # 500k messages, transactions of 1000 and 10000, 3 reps
source "$(dirname "$0")/lib.sh"
N=${N:-500000}
TXNS=${TXNS:-1000 10000}
OUT=$RESULTS/txn.jsonl
build
: > "$OUT"
work=$(mktemp -d)
for rep in $(seq 1 "$REPS"); do
for TXN in $TXNS; do
  port=$(free_port)
  rm -rf "$work/data"
  "$FINSTREAM" broker --listen "127.0.0.1:$port" --http off --data-dir "$work/data" >"$work/broker.log" 2>&1 &
  pid=$!
  wait_port 127.0.0.1 "$port"
  res=$("$BENCH" txn --bootstrap "127.0.0.1:$port" --topic "txn$rep" --messages "$N" --txn-messages "$TXN")
  echo "{\"rep\":$rep,\"date\":\"$(date -I)\",\"result\":$res}" | tee -a "$OUT"
  kill -TERM "$pid"; wait "$pid" || true
done
done
rm -rf "$work"
python3 "$ROOT/bench/report.py"
