#!/usr/bin/env bash
# Broker ingest and fetch: finstream broker (segment files, durable) vs Tansu 0.6 (memory,
# sqlite), same librdkafka client and settings, everything on loopback; finstream-sled is our
# broker with --storage-format sled (the store before segment files), finstream-memory our broker
# on its in-memory store (not durable), to separate the cost of storage from the rest.
# KINDS="finstream tansu-memory" limits the run to some brokers.
#   bash bench/broker.sh            # full run (1M x 100 B, 100k x 1 KiB, acks=1 and all)
#   RESULTS=$(mktemp -d) SMALL=20000 LARGE=2000 REPS=1 bash bench/broker.sh   # smoke run
source "$(dirname "$0")/lib.sh"
SMALL=${SMALL:-1000000}
LARGE=${LARGE:-100000}
OUT=$RESULTS/broker.jsonl
build
ensure_tansu
: > "$OUT"
machine_json > "$RESULTS/machine.json"

start_broker() { # kind port dir -> pid
  case $1 in
    finstream) "$FINSTREAM" broker --listen "127.0.0.1:$2" --http off --data-dir "$3" >"$3.log" 2>&1 & ;;
    finstream-sled) "$FINSTREAM" broker --listen "127.0.0.1:$2" --http off --data-dir "$3" --storage-format sled >"$3.log" 2>&1 & ;;
    # The same broker on its in-memory store: what our protocol and server code cost without sled.
    finstream-memory) "$BENCH" memory-broker --listen "127.0.0.1:$2" >"$3.log" 2>&1 & ;;
    tansu-memory) tansu broker --storage-engine memory://tansu/ --listener-url "tcp://127.0.0.1:$2" \
                    --advertised-listener-url "tcp://127.0.0.1:$2" >"$3.log" 2>&1 & ;;
    # Tansu resolves sqlite:// paths against its working directory.
    tansu-sqlite) mkdir -p "$3"; (cd "$3" && exec tansu broker --storage-engine sqlite://tansu.db \
                    --listener-url "tcp://127.0.0.1:$2" --advertised-listener-url "tcp://127.0.0.1:$2") >"$3.log" 2>&1 & ;;
  esac
  echo $!
}

for kind in ${KINDS:-finstream finstream-sled finstream-memory tansu-memory tansu-sqlite}; do
  for workload in "100 $SMALL 1" "100 $SMALL all" "1024 $LARGE 1" "1024 $LARGE all"; do
    read -r size n acks <<<"$workload"
    idem=""; [ "$acks" = all ] && idem="--idempotent"
    for rep in $(seq 1 "$REPS"); do
      port=$(free_port); dir=$(mktemp -d)/data
      pid=$(start_broker "$kind" "$port" "$dir")
      wait_port 127.0.0.1 "$port"
      "$BENCH" create-topic --bootstrap "127.0.0.1:$port" --topic bench >/dev/null
      if res=$("$BENCH" kafka --bootstrap "127.0.0.1:$port" --topic bench --messages "$n" --size "$size" --acks "$acks" $idem); then
        echo "{\"broker\":\"$kind\",\"rep\":$rep,\"result\":$res}" | tee -a "$OUT"
      else
        echo "{\"broker\":\"$kind\",\"rep\":$rep,\"size\":$size,\"acks\":\"$acks\",\"error\":\"run failed\"}" | tee -a "$OUT"
      fi
      kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true
      rm -rf "$(dirname "$dir")"
    done
  done
done
python3 "$ROOT/bench/report.py"
