#!/usr/bin/env bash
# Browser end-to-end tests of the playground and the dashboard.
#
# Installs what is missing (Debian chromium, the e2e Node packages), then runs e2e/run.mjs against
# the server binary: STOCKROOM_BIN, default target/debug/stockroom (build it first with `cargo build`).
# Screenshots land in e2e/artifacts/. UPDATE_DOCS_SCREENSHOTS=1 also refreshes docs/*.png.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/.." && pwd)"
cd "$root"

chromium_path="${CHROMIUM_PATH:-/usr/bin/chromium}"
if [ ! -x "$chromium_path" ]; then
  echo "e2e: installing Debian chromium" >&2
  sudo_cmd=""
  if [ "$(id -u)" -ne 0 ]; then sudo_cmd="sudo"; fi
  $sudo_cmd apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq chromium >/dev/null
fi
if [ ! -x "$chromium_path" ]; then
  echo "e2e: FAILED: no Chromium at $chromium_path" >&2
  exit 1
fi

if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
  echo "e2e: installing Node.js and npm" >&2
  sudo_cmd=""
  if [ "$(id -u)" -ne 0 ]; then sudo_cmd="sudo"; fi
  $sudo_cmd apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq nodejs npm >/dev/null
fi

# playwright-core never downloads a browser; make sure nothing else tries either.
export PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1
if [ ! -d "$here/node_modules/playwright-core" ] || [ ! -d "$here/node_modules/graphql-http" ] || [ ! -d "$here/node_modules/@apollo/client" ] || [ "$here/package-lock.json" -nt "$here/node_modules/.package-lock.json" ]; then
  echo "e2e: npm ci in e2e/" >&2
  (cd "$here" && npm ci --no-audit --no-fund --loglevel=error)
fi

bin="${STOCKROOM_BIN:-target/debug/stockroom}"
if [ ! -x "$bin" ]; then
  echo "e2e: FAILED: no server binary at $bin (run cargo build, or set STOCKROOM_BIN)" >&2
  exit 1
fi
export STOCKROOM_BIN="$bin"

mkdir -p "$here/artifacts"
exec node --test --test-concurrency=1 --test-reporter=spec "$here/run.mjs" "$here/http.mjs" "$here/apq.mjs"
