#!/usr/bin/env bash
# Debian packages the test suite needs (real Redis and PostgreSQL, Chromium for tests/browser,
# promtool for the alert rules, and the checkers of deploy/).
# Idempotent: installs only what is missing, and does nothing when all is there.
set -euo pipefail

have_initdb() {
    # Debian keeps the PostgreSQL server binaries off PATH, in /usr/lib/postgresql/<version>/bin.
    command -v initdb >/dev/null 2>&1 && return 0
    local found
    for found in /usr/lib/postgresql/*/bin/initdb; do
        [ -x "$found" ] && return 0
    done
    return 1
}

need=()
command -v redis-server >/dev/null 2>&1 || need+=(redis-server)
have_initdb || need+=(postgresql)
# Debian's build, driven by PyPI's playwright through executable_path: playwright's own
# browser download (`playwright install`) reaches hosts this network does not.
[ -x /usr/bin/chromium ] || need+=(chromium)
# promtool checks and unit-tests deploy/prometheus/alerts.yml; Debian ships it in prometheus.
command -v promtool >/dev/null 2>&1 || [ -x /usr/bin/promtool ] || need+=(prometheus)
# The tools that check deploy/: systemd-analyze (units), nginx -t (proxy sample), logrotate -d,
# shellcheck (release.sh), openssl (the nginx test's certificate).
command -v systemd-analyze >/dev/null 2>&1 || need+=(systemd)
command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ] || need+=(nginx)
command -v logrotate >/dev/null 2>&1 || [ -x /usr/sbin/logrotate ] || need+=(logrotate)
command -v shellcheck >/dev/null 2>&1 || need+=(shellcheck)
command -v openssl >/dev/null 2>&1 || need+=(openssl)
# pg_dump and pg_restore for `flask db backup|restore` (tests/deploy/test_backup_restore.py).
command -v pg_restore >/dev/null 2>&1 || need+=(postgresql-client)

if [ ${#need[@]} -eq 0 ]; then
    exit 0
fi

if ! command -v apt-get >/dev/null 2>&1; then
    echo "missing: ${need[*]} (install them with your package manager)" >&2
    exit 1
fi
sudo=""
[ "$(id -u)" -ne 0 ] && sudo="sudo"
echo "installing Debian packages: ${need[*]}"
$sudo apt-get update -qq
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
