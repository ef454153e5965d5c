#!/usr/bin/env bash
# Prints the path of a cmake for building libopus (the transcoder's `opus` crate builds
# it from source): the machine's own if it has one, else pip's `cmake` wheel in a small
# cached venv of its own (${STREAMCORE_CACHE:-~/.cache/streamcore}/cmake-venv), made on
# first use. The last line of stdout is the path; progress goes to stderr.
# Used by scripts/cmake (the CMAKE of .cargo/config.toml), .ci/run and scripts/test.
set -euo pipefail
VERSION=4.4.5
if command -v cmake >/dev/null 2>&1; then
    command -v cmake
    exit 0
fi
cache="${STREAMCORE_CACHE:-${HOME:-/root}/.cache/streamcore}"
venv="${cache}/cmake-venv"
bin="${venv}/bin/cmake"
if [[ -x "$bin" ]] && "$bin" --version >/dev/null 2>&1; then
    printf '%s\n' "$bin"
    exit 0
fi
mkdir -p "$cache"
exec 9>"${cache}/.cmake.lock"
flock 9
if ! { [[ -x "$bin" ]] && "$bin" --version >/dev/null 2>&1; }; then
    printf 'ensure-cmake: installing cmake %s into %s\n' "$VERSION" "$venv" >&2
    "${PYTHON:-python3}" -m venv "$venv" >&2
    "${venv}/bin/pip" install --quiet --disable-pip-version-check "cmake==${VERSION}" >&2
fi
printf '%s\n' "$bin"
