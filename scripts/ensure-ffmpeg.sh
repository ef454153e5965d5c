#!/usr/bin/env bash
# Prints the path of an ffmpeg CLI, for benchmarks that compare against it
# (benches/src/bin/sc-transcodebench.rs): the machine's own if it has one, else
# Debian's, installed with `apt-get install -y --no-install-recommends ffmpeg` (needs
# root or sudo; a minute or two once per machine). Tests never need it: they use
# FFmpeg's libraries through PyAV (scripts/ensure-venv.sh).
#
# Idempotent: installs only when `ffmpeg` is not on PATH. Progress goes to stderr;
# the last line of stdout is the absolute path of the binary. Exits 1 when there is
# no ffmpeg and it cannot be installed.
set -euo pipefail

log() { printf 'ensure-ffmpeg: %s\n' "$*" >&2; }

if command -v ffmpeg >/dev/null 2>&1; then
    log "ffmpeg ready: $(command -v ffmpeg)"
    command -v ffmpeg
    exit 0
fi

if ! command -v apt-get >/dev/null 2>&1; then
    log "no ffmpeg on PATH and no apt-get to install one"
    exit 1
fi
sudo=()
if [[ "$(id -u)" != 0 ]]; then
    if command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
        sudo=(sudo -n)
    else
        log "no ffmpeg on PATH; installing it needs root (or passwordless sudo)"
        exit 1
    fi
fi

cache="${STREAMCORE_CACHE:-${HOME:-/root}/.cache/streamcore}"
mkdir -p "$cache"
if command -v flock >/dev/null 2>&1; then
    exec 9>"${cache}/.ffmpeg.lock"
    flock 9
    if command -v ffmpeg >/dev/null 2>&1; then
        command -v ffmpeg
        exit 0
    fi
fi

log "installing Debian's ffmpeg (apt-get)"
export DEBIAN_FRONTEND=noninteractive
"${sudo[@]}" apt-get update -q >&2
"${sudo[@]}" apt-get install -y -q --no-install-recommends ffmpeg >&2
ffmpeg -hide_banner -version | head -n1 >&2
log "ffmpeg ready: $(command -v ffmpeg)"
command -v ffmpeg
