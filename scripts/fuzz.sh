#!/usr/bin/env bash
# Runs every cargo-fuzz target for SECONDS each (default 60), starting from the seeds and the
# kept corpus; a crash is copied to fuzz/regressions/<target>/ (replayed by
# tests/fuzz_corpus.rs from then on) and the corpus is minimized to keep the repository small.
#   bash scripts/fuzz.sh [SECONDS] [TARGET...]
# Needs the nightly toolchain (rustup toolchain install nightly) and cargo-fuzz (installed
# here if missing). Without a sanitizer (-s none): the C libraries linked in (librdkafka)
# do not build with ASan, and the Rust code is memory-safe; panics, aborts, timeouts and
# allocations over 256 MiB are what is hunted. Results: fuzz/last-run.txt.
set -uo pipefail
cd "$(dirname "$0")/.."
secs=${1:-60}
shift || true
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(frames request record_batch csv_file description)
command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked
seeds=$(mktemp -d)
trap 'rm -rf "$seeds"' EXIT
FUZZ_SEEDS_DIR=$seeds cargo test -q --test fuzz_corpus -- --ignored write_seeds >/dev/null

report=fuzz/last-run.txt
{
  echo "# scripts/fuzz.sh $secs, $(date -u +%Y-%m-%dT%H:%MZ), $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)"
  printf '%-14s %12s %10s %8s\n' target executions corpus crashes
} > "$report"
status=0
for t in "${targets[@]}"; do
  mkdir -p "fuzz/corpus/$t" "$seeds/$t"
  log=$(mktemp)
  (cd fuzz && cargo +nightly fuzz run -s none "$t" "corpus/$t" "$seeds/$t" -- \
      -max_total_time="$secs" -rss_limit_mb=2048 -malloc_limit_mb=256 -timeout=10 \
      -max_len=65536 -print_final_stats=1) >"$log" 2>&1
  rc=$?
  crashes=0
  for a in fuzz/artifacts/"$t"/*; do
    [ -f "$a" ] || continue
    mkdir -p "fuzz/regressions/$t"
    cp "$a" "fuzz/regressions/$t/"
    crashes=$((crashes + 1))
  done
  if [ $rc -ne 0 ]; then
    status=1
    echo "fuzz: $t FAILED (see below); inputs copied to fuzz/regressions/$t/" >&2
    grep -E "panicked|ERROR|SUMMARY|out-of-memory|malloc" "$log" | head -20 >&2
  fi
  execs=$(grep -m1 'stat::number_of_executed_units' "$log" | awk '{print $2}')
  (cd fuzz && cargo +nightly fuzz cmin -s none "$t" "corpus/$t" >/dev/null 2>&1) || true
  printf '%-14s %12s %10s %8s\n' "$t" "${execs:-?}" "$(ls "fuzz/corpus/$t" | wc -l)" "$crashes" >> "$report"
  rm -f "$log"
done
cat "$report"
exit $status
