# Shared helpers for the benchmark scripts (sourced).
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
RESULTS=${RESULTS:-$ROOT/bench/results}
REPS=${REPS:-3}
mkdir -p "$RESULTS"
export PGOPTIONS="-c client_min_messages=warning"
FINSTREAM=$ROOT/target/release/finstream
BENCH=$ROOT/target/release/finstream-bench

build() {
  (cd "$ROOT" && cargo build --release -q -p finstream -p finstream-bench)
}

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

ensure_tansu() { # the peer broker of bench/broker.sh and broker_cpu.sh, installed once
  if ! command -v tansu >/dev/null; then
    echo "installing Tansu 0.6.0 (one-time, slow)..." >&2
    cargo install tansu --version 0.6.0 --features dynostore,libsql --locked -q
  fi
}

wait_port() { # host port
  for _ in $(seq 1 200); do
    if (exec 3<>"/dev/tcp/$1/$2") 2>/dev/null; then exec 3>&- 3<&-; return 0; fi
    sleep 0.05
  done
  echo "nothing listening on $1:$2" >&2
  return 1
}

machine_json() {
  python3 - <<PY
import json, os, platform, subprocess, datetime
cpu = next((l.split(':',1)[1].strip() for l in open('/proc/cpuinfo') if l.startswith('model name')), platform.processor())
print(json.dumps({"date": datetime.date.today().isoformat(), "cores": os.cpu_count(), "cpu": cpu,
                  "kernel": platform.release(), "rustc": subprocess.run(["rustc","--version"],capture_output=True,text=True).stdout.strip()}))
PY
}
