#!/usr/bin/env bash
# Weekly Stripe API version check for cron (see README, "Stripe API version health"):
#   0 9 * * 1 /var/www/kamiyo/scripts/check_stripe_version.sh >> /var/log/kamiyo/stripe_version_check.log 2>&1
#
# Runs `flask --app wsgi stripe-version check` with the project's .venv from the
# project folder (extra arguments, e.g. --local or --json, are passed on), and
# appends its timestamped output to $LOG_FILE when that is set (else prints it,
# for cron's own redirection as above).
# Exit status: 0 healthy, 1 warning, 2 critical, 3 unknown (anything else: the
# check itself could not run, e.g. a configuration error).
set -u
cd "$(dirname "$0")/.." || exit 4
FLASK=".venv/bin/flask"
if [ ! -x "$FLASK" ]; then
    echo "check_stripe_version: $PWD/$FLASK not found; run 'make run' or 'make test' once to create .venv" >&2
    exit 4
fi

output="$("$FLASK" --app wsgi stripe-version check "$@" 2>&1)"
status=$?
stamp="$(date -u +%Y-%m-%dT%H:%M:%SZ)"
report="[$stamp] stripe-version check exit=$status
$output"
if [ -n "${LOG_FILE:-}" ]; then
    mkdir -p "$(dirname "$LOG_FILE")" && echo "$report" >> "$LOG_FILE"
else
    echo "$report"
fi
exit "$status"
