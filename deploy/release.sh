#!/usr/bin/env bash
# A release, every step a command that stops the release when it fails:
#   backup -> install into releases/<time> (with its venv) -> preflight -> migrate
#   -> point `current` at it -> graceful reload (HUP to gunicorn's master) -> verify.
# When verification fails, `current` goes back to the previous release, gunicorn is
# reloaded again, and the script says so and exits non-zero.
#
#   sudo -u kamiyo /srv/kamiyo/current/deploy/release.sh SOURCE
#
# SOURCE: a checkout of the service (folder) or a .tar.gz of one. Exit codes: 0 live
# (verification passed, or warned: see its lines); 1 verification failed and the
# previous release is back; 2 stopped before going live (nothing served changed);
# 3 the new release went live but could not be verified or rolled back: act now.
#
# Settings (environment):
#   KAMIYO_ROOT           /srv/kamiyo: releases/, current, instance/
#   KAMIYO_ENV_FILE       /etc/kamiyo/kamiyo.env: the services' settings
#   KAMIYO_PIDFILE        /run/kamiyo-web/gunicorn.pid: gunicorn's master (kamiyo-web.service)
#   KAMIYO_VERIFY_URL     http://127.0.0.1:$PORT (from the settings file, 8000 if unset)
#   KAMIYO_BACKUP_DIR     where `db backup` writes (unset: its default)
#   KAMIYO_KEEP_RELEASES  5: older release folders are removed after a good release
#   KAMIYO_SCHEDULER_UNIT kamiyo-scheduler.service, restarted on the new release when
#                         systemd runs it; empty: leave it alone
#   KAMIYO_RELEASE_VENV   an existing venv to link as each release's .venv instead of
#                         creating one with pip: for tests and offline hosts whose venv
#                         already holds requirements.txt
#   KAMIYO_RELOAD_TIMEOUT 60: seconds for the old workers to finish after a HUP
set -euo pipefail

root=${KAMIYO_ROOT:-/srv/kamiyo}
pidfile=${KAMIYO_PIDFILE:-/run/kamiyo-web/gunicorn.pid}
keep=${KAMIYO_KEEP_RELEASES:-5}
scheduler_unit=${KAMIYO_SCHEDULER_UNIT-kamiyo-scheduler.service}
reload_timeout=${KAMIYO_RELOAD_TIMEOUT:-60}
export KAMIYO_ENV_FILE=${KAMIYO_ENV_FILE:-/etc/kamiyo/kamiyo.env}

say() { printf 'release [%s]: %s\n' "$(date -u +%H:%M:%S)" "$*"; }
fail() {
    local code=$1
    shift
    printf 'release: FAILED: %s\n' "$*" >&2
    exit "$code"
}

# `flask --app wsgi SUBCOMMAND... ARGS...` in a release folder, with the services' settings:
# run_flask RELEASE HOOK "SUBCOMMAND WORDS" ARGS... A non-empty HOOK (KAMIYO_BACKUP_CMD,
# KAMIYO_PREFLIGHT_CMD, KAMIYO_VERIFY_CMD) replaces `flask --app wsgi SUBCOMMAND` by another
# command taking the same ARGS with the same exit codes: how a test makes a step fail.
run_flask() {
    local release=$1 hook=$2 words=$3
    shift 3
    local -a command
    if [ -n "$hook" ]; then
        read -r -a command <<<"$hook"
    else
        read -r -a command <<<"flask --app wsgi $words"
    fi
    "$release/deploy/kamiyo-env" "${command[@]}" "$@"
}

master_pid() {
    local pid
    [ -r "$pidfile" ] || return 1
    pid=$(tr -d '[:space:]' <"$pidfile")
    [[ $pid =~ ^[0-9]+$ ]] && kill -0 "$pid" 2>/dev/null || return 1
    printf '%s\n' "$pid"
}

# HUP gunicorn's master, then wait until the workers it had are gone: from then on every
# request is answered by a worker that loaded the code `current` points at.
reload_gunicorn() {
    local master old deadline pid alive
    master=$(master_pid) || return 2
    old=$(pgrep -P "$master" || true)
    kill -HUP "$master"
    deadline=$((SECONDS + reload_timeout))
    while :; do
        if ! kill -0 "$master" 2>/dev/null; then
            return 3 # the master exited: the new workers could not boot
        fi
        alive=0
        for pid in $old; do
            kill -0 "$pid" 2>/dev/null && alive=1
        done
        if [ "$alive" = 0 ] && [ -n "$(pgrep -P "$master" || true)" ]; then
            return 0
        fi
        [ "$SECONDS" -lt "$deadline" ] || return 4
        sleep 0.2
    done
}

# The release whose venv gunicorn's master was started from: the master keeps that interpreter
# and its packages across reloads, so that folder must stay, and new packages need a restart.
master_release() {
    local master arg
    master=$(master_pid) || return 1
    while IFS= read -r -d '' arg; do
        if [[ $arg == "$root/releases/"* ]]; then
            arg=${arg#"$root/releases/"}
            printf 'releases/%s\n' "${arg%%/*}"
            return 0
        fi
    done <"/proc/$master/cmdline"
    return 1
}

point_current_at() {
    ln -sfn "$1" "$root/current.new"
    mv -T "$root/current.new" "$root/current"
}

# The scheduler has no graceful reload: it restarts on the release `current` points at.
# As the kamiyo user this needs the sudoers line of deploy/RUNBOOK.md (first install).
restart_scheduler() {
    local -a as_root=()
    [ "$(id -u)" = 0 ] || as_root=(sudo -n)
    if [ -n "$scheduler_unit" ] && command -v systemctl >/dev/null 2>&1; then
        "${as_root[@]}" systemctl try-restart "$scheduler_unit" ||
            say "could not restart $scheduler_unit: run 'systemctl restart $scheduler_unit'"
    fi
}

[ $# -eq 1 ] || fail 2 "usage: $0 SOURCE (a checkout folder or a .tar.gz of one)"
source_path=$1
[ -e "$source_path" ] || fail 2 "no such source: $source_path"
# The commands create files in the instance folder (SQLite's -wal and -shm, backups): made
# by another user, the service could no longer open them.
owner=$(stat -c %u "$root/instance" 2>/dev/null) || fail 2 "no instance folder $root/instance (deploy/RUNBOOK.md: first install)"
[ "$owner" = "$(id -u)" ] || fail 2 "run it as the owner of $root/instance: sudo -u $(stat -c %U "$root/instance") $0 $*"
mkdir -p "$root/releases"

previous=""
if [ -L "$root/current" ]; then
    previous=$(readlink "$root/current")
fi

# 1. Backup, with the code that wrote the database.
if [ -n "$previous" ]; then
    say "backup of the database (release $previous)"
    backup_args=()
    if [ -n "${KAMIYO_BACKUP_DIR:-}" ]; then
        backup_args+=("$KAMIYO_BACKUP_DIR")
    fi
    run_flask "$root/current" "${KAMIYO_BACKUP_CMD:-}" "db backup" "${backup_args[@]}" ||
        fail 2 "the backup failed: nothing was changed"
else
    say "first release here: no database to back up yet"
fi

# 2. Install into a folder of its own.
name=$(date -u +%Y%m%dT%H%M%SZ)
while [ -e "$root/releases/$name" ]; do name="$name-1"; done
new="$root/releases/$name"
say "installing $source_path into $new"
# Built in place: a venv's scripts name its path, so it cannot be moved once made.
# `current` never points at a folder whose install failed.
mkdir "$new"
if [ -d "$source_path" ]; then
    tar -C "$source_path" --exclude=./.git --exclude=./.venv --exclude=./instance \
        --exclude=__pycache__ -cf - . | tar -C "$new" -xf -
else
    tar -C "$new" -xzf "$source_path"
fi
if [ ! -f "$new/wsgi.py" ] || [ ! -x "$new/deploy/kamiyo-env" ]; then
    fail 2 "$source_path is not a checkout of the service (no wsgi.py or deploy/kamiyo-env); remove $new"
fi
if [ -n "${KAMIYO_RELEASE_VENV:-}" ]; then
    [ -x "$KAMIYO_RELEASE_VENV/bin/python" ] || fail 2 "KAMIYO_RELEASE_VENV=$KAMIYO_RELEASE_VENV is not a venv"
    ln -s "$KAMIYO_RELEASE_VENV" "$new/.venv"
else
    python3 -m venv "$new/.venv"
    "$new/.venv/bin/pip" install --quiet --disable-pip-version-check -r "$new/requirements.txt" ||
        fail 2 "pip could not install requirements.txt into $new/.venv: nothing was changed; remove $new"
fi

# 3. Preflight: the new code against the live settings, database, Redis and Stripe.
say "preflight"
preflight_args=()
# A first install has no database yet: its migration (step 4) makes it.
[ -n "$previous" ] || preflight_args+=(--new-database)
set +e
run_flask "$new" "${KAMIYO_PREFLIGHT_CMD:-}" preflight "${preflight_args[@]}"
status=$?
set -e
case $status in
    0) ;;
    1) say "preflight warned (lines above); going on" ;;
    *) fail 2 "preflight failed (exit $status, lines above): nothing was changed; $new is left for a look" ;;
esac

# 4. Migrate. The running release keeps serving: migrations must suit both (RUNBOOK.md).
say "migrating the database"
run_flask "$new" "" "db upgrade" ||
    fail 2 "the migration failed: nothing served changed; the database may be part-migrated: see deploy/RUNBOOK.md (rollback)"

# 5. Go live.
point_current_at "releases/$name"
say "current -> releases/$name (was ${previous:-nothing})"
restart_scheduler
set +e
reload_gunicorn
status=$?
set -e
case $status in
    0) say "gunicorn reloaded: every worker runs releases/$name" ;;
    2)
        say "gunicorn is not running (no live master in $pidfile): start it with 'systemctl start kamiyo-web',"
        say "then check it with: $root/current/deploy/kamiyo-env flask --app wsgi verify-deploy --url URL"
        exit 0
        ;;
    *)
        if [ -n "$previous" ]; then
            point_current_at "$previous"
            restart_scheduler
        fi
        if [ "$status" = 3 ]; then
            fail 3 "gunicorn exited after the reload (the new workers did not boot: see its log);" \
                "current -> ${previous:-nothing} again; start it: systemctl restart kamiyo-web"
        fi
        fail 3 "the old workers did not finish within ${reload_timeout}s; current -> ${previous:-nothing} again;" \
            "reload once more: systemctl reload kamiyo-web"
        ;;
esac

# 6. Verify the live service; roll back when it fails.
url=${KAMIYO_VERIFY_URL:-}
if [ -z "$url" ]; then
    # shellcheck disable=SC2016  # expanded by the inner shell, where the settings are loaded
    url="http://127.0.0.1:$("$new/deploy/kamiyo-env" sh -c 'printf %s "${PORT:-8000}"')"
fi
say "verifying $url"
set +e
run_flask "$new" "${KAMIYO_VERIFY_CMD:-}" verify-deploy --url "$url"
status=$?
set -e
if [ "$status" != 0 ] && [ "$status" != 1 ]; then
    [ -n "$previous" ] || fail 3 "verification failed (exit $status) and there is no previous release to go back to"
    say "verification failed (exit $status): rolling back to $previous"
    point_current_at "$previous"
    restart_scheduler
    set +e
    reload_gunicorn
    status=$?
    set -e
    [ "$status" = 0 ] || fail 3 "rolled current back to $previous but the reload failed (status $status):" \
        "systemctl restart kamiyo-web"
    fail 1 "releases/$name failed verification; $previous serves again (current -> $previous)." \
        "The database stays migrated: if the migration is the cause, see deploy/RUNBOOK.md (rollback)"
fi
[ "$status" = 1 ] && say "verification warned (lines above)"
if started_from=$(master_release) && ! cmp -s "$root/$started_from/requirements.txt" "$new/requirements.txt"; then
    say "requirements.txt differs from that of $started_from, whose venv gunicorn's master runs:"
    say "the workers keep its packages until a restart: systemctl restart kamiyo-web"
fi

# 7. Keep the newest releases (never the live or the previous one).
mapfile -t releases < <(find "$root/releases" -mindepth 1 -maxdepth 1 -type d -printf '%f\n' | sort -r)
for old in "${releases[@]:$keep}"; do
    case "releases/$old" in
        "releases/$name" | "$previous" | "$(master_release || true)") continue ;;
    esac
    rm -rf "${root:?}/releases/$old"
done

say "releases/$name is live"
