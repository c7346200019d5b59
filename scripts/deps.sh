#!/usr/bin/env bash
# Installs everything livequeryd needs to build, run and test on Debian 12.
# Used by the README's Quick start and by .ci/run; safe to run again.
set -euo pipefail
cd "$(dirname "$0")/.."

PKGS=(build-essential cmake pkg-config
      libwebsockets-dev libhiredis-dev libjansson-dev libpcre2-dev libssl-dev libuv1-dev uthash-dev libwebsockets-evlib-uv liburing-dev
      libmongoc-dev libbson-dev python3-mockupdb python3-pymongo
      redis-server
      chromium # tests/integration/display.test.js: the display page in headless Chromium (playwright-core)
      clang libclang-rt-14-dev) # scripts/fuzz.sh: clang and its libFuzzer runtime
# Node.js and npm only from Debian when the machine has none (an image may ship its own,
# which Debian's npm package would conflict with).
command -v node >/dev/null 2>&1 || PKGS+=(nodejs)
command -v npm >/dev/null 2>&1 || PKGS+=(npm)

missing=()
for p in "${PKGS[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
    SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
    export DEBIAN_FRONTEND=noninteractive
    $SUDO apt-get update -qq
    $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

# The real Parse JS SDK, a raw WebSocket client and playwright-core (drives the
# Debian chromium) for the integration tests.
if [ ! -d tests/node_modules/parse ] || [ ! -d tests/node_modules/ws ] || [ ! -d tests/node_modules/playwright-core ]; then
    (cd tests && npm ci --no-audit --no-fund --loglevel=error 2>/dev/null \
        || npm install --no-audit --no-fund --loglevel=error)
fi
