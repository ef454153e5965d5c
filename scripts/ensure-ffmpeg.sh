#!/usr/bin/env bash
# Prints the path of an ffmpeg CLI, for benchmarks that compare against it
# (benches/src/bin/sc-transcodebench.rs): the machine's own if it has one, else
# Debian's (a minute or two once per machine). Tests never need it: they use FFmpeg's
# libraries through PyAV (scripts/ensure-venv.sh). The last line of stdout is the path.
set -euo pipefail
exec "$(dirname "${BASH_SOURCE[0]}")/ensure-debian-command.sh" ffmpeg ffmpeg
