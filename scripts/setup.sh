#!/usr/bin/env bash
# One-time set-up of a fresh Debian/Ubuntu machine for building and testing finstream.
# Idempotent: installs only what is missing. Needs root or sudo for apt.
set -euo pipefail
cd "$(dirname "$0")/.."

SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi

# Build tools (librdkafka is compiled from source by the rdkafka crate, with OpenSSL for TLS and SCRAM;
# the openssl CLI makes the TLS test certificates), kcat for the
# CLI tests, PostgreSQL for the consumer and the end-to-end pipeline, and Chromium for the
# console's browser tests, valgrind for the instruction-count check (bench/instructions.sh).
apt_packages=(build-essential pkg-config cmake libssl-dev openssl python3 python3-venv kcat postgresql postgresql-client curl chromium time valgrind)
missing=()
for p in "${apt_packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup: installing ${missing[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
fi

if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
  echo "setup: installing nodejs and npm"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq nodejs npm >/dev/null
fi

# Clients of the compatibility matrix (docs/COMPATIBILITY.md), pinned, kept out of the
# system: two Python venvs (aiokafka 0.10.0 cannot share one with the newest aiokafka)
# and a local node_modules.
for venv in ".venv:tests/compat/python/requirements.txt" \
            ".venv-aiokafka010:tests/compat/python/requirements-aiokafka010.txt"; do
  dir=${venv%%:*}
  req=${venv#*:}
  [ -x "$dir/bin/python" ] || python3 -m venv "$dir"
  "$dir/bin/pip" install -q --disable-pip-version-check -r "$req"
done
(cd tests/compat/node && npm ci --no-audit --no-fund --loglevel=error)
# playwright-core drives Debian's chromium for the console test (tests/console.rs); it
# never downloads a browser of its own.
(cd tests/console && npm ci --no-audit --no-fund --loglevel=error)

if ! command -v cargo >/dev/null; then
  echo "setup: Rust is missing; install it with rustup (https://rustup.rs), then re-run" >&2
  exit 1
fi

# PostgreSQL must answer on 127.0.0.1:5432 for the consumer tests and all-in-one.
if ! pg_isready -h 127.0.0.1 -p 5432 -q 2>/dev/null; then
  if command -v pg_ctlcluster >/dev/null && [ -d /etc/postgresql ]; then
    version=$(ls /etc/postgresql | sort -V | tail -1)
    $SUDO pg_ctlcluster --skip-systemctl-redirect "$version" main start || true
  fi
fi
if pg_isready -h 127.0.0.1 -p 5432 -q 2>/dev/null; then
  echo "setup: PostgreSQL is up on 127.0.0.1:5432"
else
  echo "setup: warning: PostgreSQL is not answering on 127.0.0.1:5432" >&2
fi
echo "setup: done"
