#!/usr/bin/env bash
# System packages the tests need beyond the Python ones: a PostgreSQL server (deployment topology
# and shared Optuna storage tests), redis-server (broker of the Celery executor test) and Chromium, run headless (browser test of the Dagster UI).
# Idempotent and instant when everything is present: apt-get runs only for what is missing.
# Debian/Ubuntu only; elsewhere it says what to install and fails.
set -euo pipefail

missing=()

have_postgres_server() {
    command -v initdb >/dev/null 2>&1 && command -v postgres >/dev/null 2>&1 && return 0
    compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null
}
have_postgres_server || missing+=(postgresql)
command -v redis-server >/dev/null 2>&1 || [ -x /usr/bin/redis-server ] || missing+=(redis-server)
command -v chromium >/dev/null 2>&1 || dpkg -s chromium >/dev/null 2>&1 || missing+=(chromium)

if [ ${#missing[@]} -eq 0 ]; then
    echo "system deps: all present (postgresql, redis-server, chromium)"
    exit 0
fi

if ! command -v apt-get >/dev/null 2>&1; then
    echo "system deps missing: ${missing[*]} (no apt-get here: install them with your package manager)" >&2
    exit 1
fi

sudo=()
if [ "$(id -u)" -ne 0 ]; then
    command -v sudo >/dev/null 2>&1 || { echo "need root or sudo to install: ${missing[*]}" >&2; exit 1; }
    sudo=(sudo)
fi

echo "system deps: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
"${sudo[@]}" apt-get update -qq
"${sudo[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}"
