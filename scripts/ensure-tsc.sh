#!/usr/bin/env bash
# Prints the path of the pinned TypeScript compiler that type-checks the web assets'
# JSDoc (web/package.json, web/package-lock.json), installing it with the machine's
# npm into a cached directory on first use. Only the test command needs it: the server
# serves the files as they are and needs no Node.js.
#
#   dir:  ${STREAMCORE_CACHE:-$HOME/.cache/streamcore}/web-tools-<hash of the lock file>
#
# The last line of stdout is the path of `tsc`; progress goes to stderr.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
lock="${root}/web/package-lock.json"
cache="${STREAMCORE_CACHE:-${HOME:-/root}/.cache/streamcore}"
hash="$(sha256sum "$lock" | cut -c1-16)"
dir="${cache}/web-tools-${hash}"
tsc="${dir}/node_modules/.bin/tsc"

log() { printf 'ensure-tsc: %s\n' "$*" >&2; }

if [[ -x "$tsc" ]] && "$tsc" --version >/dev/null 2>&1; then
    printf '%s\n' "$tsc"
    exit 0
fi
if ! command -v npm >/dev/null 2>&1; then
    log "npm is missing: the type check of web/ needs Node.js and npm (Debian: nodejs npm)"
    exit 1
fi
mkdir -p "$dir"
exec 9>"${cache}/.web-tools.lock"
flock 9
if ! { [[ -x "$tsc" ]] && "$tsc" --version >/dev/null 2>&1; }; then
    log "installing the pinned TypeScript into $dir"
    cp "${root}/web/package.json" "$lock" "$dir/"
    (cd "$dir" && npm ci --ignore-scripts --no-audit --no-fund --loglevel=error >&2)
fi
"$tsc" --version >&2
printf '%s\n' "$tsc"
