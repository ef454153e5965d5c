#!/usr/bin/env bash
# Prints the path of Debian's coturn `turnserver`, the external TURN server the TURN
# tests run against with the node's REST-style credentials (tests/turn.rs starts its
# own process on loopback ports). Installs the `coturn` package when missing; its
# service is not started. The last line of stdout is the path.
set -euo pipefail
exec "$(dirname "${BASH_SOURCE[0]}")/ensure-debian-command.sh" turnserver coturn
