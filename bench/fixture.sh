#!/usr/bin/env bash
# The broker as another project's test fixture (finstream_broker::testing::EmbeddedKafka):
# start, create a topic, one message produced with librdkafka and read back, drop.
# REPS=20 by default here; one JSON line per repetition in results/fixture.jsonl.
source "$(dirname "$0")/lib.sh"
OUT=$RESULTS/fixture.jsonl
build
"$BENCH" fixture --reps "${FIXTURE_REPS:-20}" | tee "$OUT"
python3 "$ROOT/bench/report.py"
