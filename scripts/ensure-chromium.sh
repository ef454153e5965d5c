#!/usr/bin/env bash
# Prints the path of Debian's Chromium for the browser tests (driven by Playwright for
# Python with executable_path; Playwright never downloads a browser here), installing
# the `chromium` package first when it is missing (needs root or passwordless sudo;
# a minute or two once per machine). The last line of stdout is the path.
set -euo pipefail

log() { printf 'ensure-chromium: %s\n' "$*" >&2; }

for c in chromium chromium-browser; do
    if command -v "$c" >/dev/null 2>&1 && "$c" --version >/dev/null 2>&1; then
        command -v "$c"
        exit 0
    fi
done

if ! command -v apt-get >/dev/null 2>&1; then
    log "no chromium on PATH and no apt-get to install one"
    exit 1
fi
sudo=()
if [[ "$(id -u)" != 0 ]]; then
    if command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
        sudo=(sudo -n)
    else
        log "no chromium on PATH; installing it needs root (or passwordless sudo)"
        exit 1
    fi
fi

cache="${STREAMCORE_CACHE:-${HOME:-/root}/.cache/streamcore}"
mkdir -p "$cache"
exec 9>"${cache}/.chromium.lock"
flock 9
if ! command -v chromium >/dev/null 2>&1; then
    log "installing Debian's chromium (apt-get)"
    export DEBIAN_FRONTEND=noninteractive
    "${sudo[@]}" apt-get update -q >&2
    # fonts-liberation: pages render with a real font in the screenshots.
    "${sudo[@]}" apt-get install -y -q --no-install-recommends chromium fonts-liberation >&2
fi
chromium --version >&2
log "chromium ready: $(command -v chromium)"
command -v chromium
