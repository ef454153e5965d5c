#!/usr/bin/env bash
# Builds and runs every StreamCore benchmark; results go to target/bench-results/.
#   benches/run-all.sh            # B0 + B1/B2 + transports + B9, full (about 30 minutes on 2 cores)
#   benches/run-all.sh --quick    # a smoke run (about 2 minutes)
# See docs/benchmarks.md for what is measured and how to read it.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

quick=()
if [[ "${1:-}" == "--quick" ]]; then
    quick=(--quick)
fi
# Real-time priority (root only) keeps other work on a shared machine from
# preempting the server and the load generator; see docs/benchmarks.md.
rt=()
if [[ $EUID -eq 0 ]]; then
    rt=(--rt)
fi
out=target/bench-results
mkdir -p "$out"
stamp=$(date -u +%Y%m%dT%H%M%SZ)

cargo build --release --locked --bin streamcore -p streamcore
cargo build --release --locked -p streamcore-benches --bins --benches

# B0: in-process (pins itself to CPU 0).
cargo bench --locked -p streamcore-benches --bench b0_inproc -- "${quick[@]}" "${rt[@]}" \
    --json "$out/b0-$stamp.json" | tee "$out/b0-$stamp.md"

# B1/B2: loopback end to end (server on CPU 0, load generator on CPU 1).
target/release/sc-loadgen "${quick[@]}" "${rt[@]}" --json "$out/loadgen-$stamp.json" \
    | tee "$out/loadgen-$stamp.md"

# Transports: subscribers over UDP, ICE-TCP, and through the embedded TURN server and
# Debian's coturn over UDP, TCP and TLS, alternating (server and TURN on CPU 0).
bash scripts/ensure-coturn.sh >/dev/null
transport_args=()
if [[ ${#quick[@]} -gt 0 ]]; then
    transport_args=(--rounds 1 --seconds 3)
fi
taskset -c 1 target/release/sc-transportbench "${transport_args[@]}" | tee "$out/transport-$stamp.md"

# Relay: one room over three nodes against one, over two workers against one, and the
# relay's per-packet code against plain QUIC datagrams (nodes on CPU 0).
taskset -c 1 target/release/sc-relaybench "${transport_args[@]}" | tee "$out/relay-$stamp.md"

# B9: Chromium to Chromium through the node, beside two directly connected Chromiums
# (Debian's Chromium and Playwright, as the browser tests use them).
joins=20
if [[ ${#quick[@]} -gt 0 ]]; then
    joins=5
fi
STREAMCORE_CHROMIUM="$(scripts/ensure-chromium.sh | tail -n1)" \
    "$(scripts/ensure-venv.sh | tail -n1)" benches/browser/browserbench.py \
    --streamcore target/release/streamcore --joins "$joins" --commands "$joins" \
    --json "$out/b9-$stamp.json"
