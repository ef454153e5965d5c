#!/usr/bin/env bash
# Prints the path of Debian's Chromium for the browser tests (driven by Playwright for
# Python with executable_path; Playwright never downloads a browser here), installing
# the `chromium` package first when it is missing (a minute or two once per machine).
# The last line of stdout is the path.
set -euo pipefail

if command -v chromium-browser >/dev/null 2>&1 && ! command -v chromium >/dev/null 2>&1; then
    command -v chromium-browser
    exit 0
fi
# fonts-liberation: pages render with a real font in the screenshots.
path="$("$(dirname "${BASH_SOURCE[0]}")/ensure-debian-command.sh" chromium chromium fonts-liberation | tail -n1)"
"$path" --version >&2
printf '%s\n' "$path"
