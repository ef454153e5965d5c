#!/usr/bin/env bash
# Prints the path of a cmake for building libopus (the transcoder's `opus` crate builds
# it from source): the machine's own if it has one, else the one pip installs into
# the project's cached venv (scripts/ensure-venv.sh). Use: export CMAKE="$(scripts/ensure-cmake.sh)".
set -euo pipefail
if command -v cmake >/dev/null 2>&1; then
    command -v cmake
    exit 0
fi
py="$("$(dirname "${BASH_SOURCE[0]}")/ensure-venv.sh" | tail -n1)"
printf '%s\n' "$(dirname "$py")/cmake"
