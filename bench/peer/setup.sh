#!/usr/bin/env bash
# bench/peer/setup.sh - install what bench/peer/peer.sh needs: PostgreSQL (Debian
# apt, only when no initdb under /usr/lib/postgresql/*/bin) and Parse Server 9.10.0
# in bench/peer/node_modules (npm ci from package-lock.json; only when
# node_modules/parse-server is missing). Idempotent and quiet: prints nothing and
# takes well under a second when everything is there. Exit status non-zero on failure.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
LOG=$(mktemp "${TMPDIR:-/tmp}/peer-setup.XXXXXX")
trap 'rm -f "$LOG"' EXIT

fail() { # message: print it and the captured output
    echo "setup.sh: $*" >&2
    if [ -s "$LOG" ]; then
        echo "--- output (last 40 lines):" >&2
        tail -n 40 "$LOG" >&2
    fi
    exit 1
}

have_initdb() {
    local f
    for f in /usr/lib/postgresql/*/bin/initdb; do
        [ -x "$f" ] && return 0
    done
    return 1
}

# ---- PostgreSQL -----------------------------------------------------------------
if ! have_initdb; then
    [ "$(id -u)" = 0 ] || fail "PostgreSQL is missing and installing it needs root (apt-get install postgresql)"
    command -v apt-get >/dev/null || fail "PostgreSQL is missing and apt-get is not available"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update >"$LOG" 2>&1 || fail "apt-get update failed"
    # The package's own cluster (main) is not used; peer.sh makes throwaway ones.
    apt-get install -y --no-install-recommends postgresql >>"$LOG" 2>&1 \
        || fail "apt-get install postgresql failed"
    have_initdb || fail "postgresql installed but no initdb under /usr/lib/postgresql/*/bin"
fi
id postgres >/dev/null 2>&1 || fail "no 'postgres' OS user (the postgresql package creates it)"
for tool in runuser taskset redis-cli; do
    command -v "$tool" >/dev/null || fail "$tool is required (util-linux / redis-tools)"
done

# ---- Parse Server (npm) -------------------------------------------------------------
command -v node >/dev/null || fail "node is required (Node >= 20.19)"
command -v npm >/dev/null || fail "npm is required"
node -e 'const [a,b]=process.versions.node.split(".").map(Number); process.exit(a>20||(a===20&&b>=19)?0:1)' \
    || fail "Node $(node -v) is too old for parse-server 9 (needs >= 20.19)"
if [ ! -f "$HERE/node_modules/parse-server/package.json" ]; then
    cd "$HERE"
    if [ -f package-lock.json ]; then
        npm ci --no-audit --no-fund --loglevel=error >"$LOG" 2>&1 || fail "npm ci failed in $HERE"
    else
        npm install --no-audit --no-fund --loglevel=error >"$LOG" 2>&1 || fail "npm install failed in $HERE"
    fi
    [ -f "$HERE/node_modules/parse-server/package.json" ] || fail "npm finished but node_modules/parse-server is missing"
fi
