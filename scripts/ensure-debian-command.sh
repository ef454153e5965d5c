#!/usr/bin/env bash
# ensure-debian-command.sh COMMAND PACKAGE...
#
# Prints the path of COMMAND, installing the Debian PACKAGEs first when it is not on
# PATH (apt-get, without recommends; needs root or passwordless sudo; once per
# machine). Shared by the ensure-*.sh scripts of Debian's tools (chromium, ffmpeg,
# coturn). Idempotent, and safe to run concurrently (a lock per command). Progress goes
# to stderr; the last line of stdout is the path. Exits 1 when COMMAND is missing and
# cannot be installed.
set -euo pipefail

cmd="$1"
shift
log() { printf 'ensure-%s: %s\n' "$cmd" "$*" >&2; }

if command -v "$cmd" >/dev/null 2>&1; then
    command -v "$cmd"
    exit 0
fi
if ! command -v apt-get >/dev/null 2>&1; then
    log "no $cmd on PATH and no apt-get to install it"
    exit 1
fi
sudo=()
if [[ "$(id -u)" != 0 ]]; then
    if command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
        sudo=(sudo -n)
    else
        log "no $cmd on PATH; installing $* needs root (or passwordless sudo)"
        exit 1
    fi
fi

cache="${STREAMCORE_CACHE:-${HOME:-/root}/.cache/streamcore}"
mkdir -p "$cache"
exec 9>"${cache}/.${cmd}.lock"
flock 9
if ! command -v "$cmd" >/dev/null 2>&1; then
    log "installing Debian's $* (apt-get)"
    export DEBIAN_FRONTEND=noninteractive
    "${sudo[@]}" apt-get update -q >&2
    "${sudo[@]}" apt-get install -y -q --no-install-recommends "$@" >&2
fi
log "$cmd ready: $(command -v "$cmd")"
command -v "$cmd"
