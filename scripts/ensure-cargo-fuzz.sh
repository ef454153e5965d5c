#!/usr/bin/env bash
# Install (or reuse) what the fuzz targets need: Rust nightly (libFuzzer's coverage
# flags) and cargo-fuzz, cached under ~/.cache/streamcore.
#
#   binary: ${STREAMCORE_CACHE:-$HOME/.cache/streamcore}/cargo-fuzz-$VERSION/bin/cargo-fuzz
#
# Idempotent. Progress goes to stderr; the last line of stdout is the directory that
# holds cargo-fuzz (put it on PATH).
set -euo pipefail

VERSION=0.13.2
cache="${STREAMCORE_CACHE:-${HOME:-/root}/.cache/streamcore}"
root="${cache}/cargo-fuzz-${VERSION}"

log() { printf 'ensure-cargo-fuzz: %s\n' "$*" >&2; }

mkdir -p "$cache"
exec 9>"${cache}/.cargo-fuzz.lock"
flock 9

if ! rustup toolchain list | grep -q '^nightly'; then
    log "installing Rust nightly (minimal profile)"
    rustup toolchain install nightly --profile minimal >&2
fi
if ! [[ -x "${root}/bin/cargo-fuzz" ]]; then
    log "installing cargo-fuzz ${VERSION} into $root"
    tmp_target="${cache}/.cargo-fuzz-build"
    CARGO_TARGET_DIR="$tmp_target" cargo install cargo-fuzz --version "=${VERSION}" --locked \
        --root "$root" >&2
    rm -rf "$tmp_target"
fi
log "cargo-fuzz ready: ${root}/bin"
printf '%s\n' "${root}/bin"
