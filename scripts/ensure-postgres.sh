#!/usr/bin/env bash
# Makes sure a PostgreSQL server answers on 127.0.0.1:5432 with trust auth for the
# `postgres` user (the control-api tests create and drop their own databases there).
# Idempotent: does nothing when it already answers; otherwise starts the local cluster,
# installing Debian's postgresql first if it is missing. STREAMCORE_TEST_PG_URL points
# the tests at another server instead (then this script only checks that one).
set -euo pipefail

url="${STREAMCORE_TEST_PG_URL:-postgres://postgres@127.0.0.1:5432/postgres}"
log() { printf 'ensure-postgres: %s\n' "$*" >&2; }

answers() { command -v psql >/dev/null 2>&1 && psql "$url" -Atqc 'select 1' >/dev/null 2>&1; }

if answers; then
    exit 0
fi
if [[ -n "${STREAMCORE_TEST_PG_URL:-}" ]]; then
    log "PostgreSQL at $url does not answer"
    exit 1
fi
if ! command -v pg_ctlcluster >/dev/null 2>&1; then
    log "installing postgresql (Debian)"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >&2
    apt-get install -y -qq postgresql >&2
fi
version="$(ls /etc/postgresql | sort -V | tail -n1)"
conf="/etc/postgresql/${version}/main"
# Trust auth on loopback for the test user, as the tests expect.
if ! grep -q '^host all all 127.0.0.1/32 trust' "$conf/pg_hba.conf"; then
    sed -i '1i host all all 127.0.0.1/32 trust' "$conf/pg_hba.conf"
fi
log "starting PostgreSQL ${version}"
pg_ctlcluster --skip-systemctl-redirect "$version" main start >&2 || true
for _ in $(seq 1 30); do
    answers && exit 0
    sleep 1
done
log "PostgreSQL did not come up on 127.0.0.1:5432"
exit 1
