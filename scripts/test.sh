#!/usr/bin/env bash
# The whole test suite: Rust integration tests (real server, real redis-server, real SQLite and
# PostgreSQL), then browser end-to-end tests in headless Chromium.
set -euo pipefail
cd "$(dirname "$0")/.."
command -v redis-server >/dev/null 2>&1 || { echo "redis-server is required: apt-get install -y redis-server"; exit 1; }
cargo test --workspace --locked
# Browser end-to-end tests of the playground and dashboard (installs Chromium and the Node
# packages when missing) against the debug binary the step above built.
cargo build --locked
bash e2e/run.sh
