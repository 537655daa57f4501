#!/usr/bin/env bash
# The whole test suite: Rust integration tests (real server, real redis-server, real SQLite).
set -euo pipefail
cd "$(dirname "$0")/.."
command -v redis-server >/dev/null 2>&1 || { echo "redis-server is required: apt-get install -y redis-server"; exit 1; }
cargo test --workspace --locked
