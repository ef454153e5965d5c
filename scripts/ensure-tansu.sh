#!/usr/bin/env bash
# Build (or reuse) the cached Kafka-protocol broker the event tests run against:
# tansu from crates.io, with the `dynostore` feature for in-memory storage and `libsql`
# for SQLite storage (the only one of the two that keeps SCRAM users: the SASL tests).
#
#   binary: ${STREAMCORE_CACHE:-$HOME/.cache/streamcore}/tansu-$VERSION-$FEATURES/bin/tansu
#
# Idempotent: builds only when that binary is missing or does not run (about ten
# minutes on two cores, once per machine). Progress goes to stderr; the last line of
# stdout is the absolute path of the binary. Tests start their own broker processes
# on loopback ports they choose (see tests/common/kafka.rs).
set -euo pipefail

VERSION=0.6.0
FEATURES=dynostore,libsql
cache="${STREAMCORE_CACHE:-${HOME:-/root}/.cache/streamcore}"
root="${cache}/tansu-${VERSION}-${FEATURES/,/-}"
bin="${root}/bin/tansu"

log() { printf 'ensure-tansu: %s\n' "$*" >&2; }

if [[ -x "$bin" ]] && "$bin" --version >/dev/null 2>&1; then
    log "tansu ${VERSION} ready: $bin"
    printf '%s\n' "$bin"
    exit 0
fi

mkdir -p "$cache"
if command -v flock >/dev/null 2>&1; then
    exec 9>"${cache}/.tansu.lock"
    flock 9
    if [[ -x "$bin" ]] && "$bin" --version >/dev/null 2>&1; then
        printf '%s\n' "$bin"
        exit 0
    fi
fi

log "building tansu ${VERSION} (--features ${FEATURES}) into $root; this takes a while once"
# A target dir of its own, so the project's target/ is not disturbed, removed after.
# The broker only serves the tests' few messages: opt-level 1 and no debug info build
# it in a fraction of a full release build's time on a fresh two-core machine.
tmp_target="${cache}/.tansu-build"
CARGO_TARGET_DIR="$tmp_target" \
    CARGO_PROFILE_RELEASE_OPT_LEVEL=1 CARGO_PROFILE_RELEASE_DEBUG=false \
    cargo install tansu --version "=${VERSION}" --locked \
    --features "$FEATURES" --root "$root" >&2
rm -rf "$tmp_target"
"$bin" --version >&2
log "tansu ready: $bin"
printf '%s\n' "$bin"
