#!/usr/bin/env bash
# Create (or reuse) the cached virtualenv for the Python interop harness (aiortc)
# the SMTP server of the mail tests (aiosmtpd), the outside Kafka consumer of the
# event tests (confluent-kafka), the S3 server of the recording tests (moto) and the
# driver of the browser tests (Playwright, with Debian's Chromium).
#
#   venv:  ${STREAMCORE_CACHE:-$HOME/.cache/streamcore}/venv
#   deps:  scripts/interop/requirements.txt
#
# Idempotent: the venv is (re)installed only when the requirements file's hash
# differs from the stamp written after the last successful install, or when
# the venv's python is missing/broken. All progress goes to stderr; the last
# line of stdout is the absolute path of the venv's python.
#
# Env:
#   STREAMCORE_CACHE   cache root (default: $HOME/.cache/streamcore)
#   PYTHON             interpreter used to create the venv (default: python3)
set -euo pipefail

script_dir="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
req="${script_dir}/interop/requirements.txt"
cache="${STREAMCORE_CACHE:-${HOME:-/root}/.cache/streamcore}"
venv="${cache}/venv"
stamp="${venv}/.streamcore-requirements.sha256"
py="${venv}/bin/python"
base_python="${PYTHON:-python3}"

log() { printf 'ensure-venv: %s\n' "$*" >&2; }

if [[ ! -f "$req" ]]; then
    log "missing requirements file: $req"
    exit 1
fi

hash_of() {
    if command -v sha256sum >/dev/null 2>&1; then
        sha256sum "$1" | awk '{print $1}'
    else
        "$base_python" -c 'import hashlib,sys; print(hashlib.sha256(open(sys.argv[1],"rb").read()).hexdigest())' "$1"
    fi
}

want="$(hash_of "$req")"
have=""
if [[ -f "$stamp" ]]; then
    have="$(cat "$stamp" 2>/dev/null || true)"
fi

if [[ "$want" == "$have" ]] && [[ -x "$py" ]] && "$py" -c 'import aiortc, aiohttp, numpy, av, aiosmtpd, confluent_kafka, moto.server, playwright.sync_api' >/dev/null 2>&1; then
    log "venv up to date: $venv"
    printf '%s\n' "$py"
    exit 0
fi

mkdir -p "$cache"
# Serialise concurrent callers (e.g. two test jobs) when flock is available.
if command -v flock >/dev/null 2>&1; then
    exec 9>"${cache}/.venv.lock"
    flock 9
    # Another caller may have finished the install while we waited.
    have="$(cat "$stamp" 2>/dev/null || true)"
    if [[ "$want" == "$have" ]] && [[ -x "$py" ]] && "$py" -c 'import aiortc, aiohttp, numpy, av, aiosmtpd, confluent_kafka, moto.server, playwright.sync_api' >/dev/null 2>&1; then
        log "venv up to date: $venv"
        printf '%s\n' "$py"
        exit 0
    fi
fi

if ! command -v "$base_python" >/dev/null 2>&1; then
    log "no '$base_python' on PATH"
    exit 1
fi

if [[ ! -x "$py" ]] || ! "$py" -c 'import sys' >/dev/null 2>&1; then
    log "creating venv at $venv with $("$base_python" --version 2>&1)"
    rm -rf "$venv"
    "$base_python" -m venv "$venv" >&2
fi

rm -f "$stamp"
log "installing $(grep -cv '^\s*\(#\|$\)' "$req") pinned packages from $req"
export PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_INPUT=1
"$py" -m pip install --quiet --prefer-binary -r "$req" >&2
"$py" -c 'import aiortc, aiohttp, numpy, av, aiosmtpd, confluent_kafka, moto.server, playwright.sync_api' >&2
printf '%s\n' "$want" >"$stamp"
log "venv ready: $venv"
printf '%s\n' "$py"
