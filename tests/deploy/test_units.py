"""The systemd units, the logrotate file and the crontab line of deploy/, each checked by the
tool made for it (Debian's systemd and logrotate: `make test` installs them)."""

from __future__ import annotations

import getpass
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
UNITS = ("kamiyo-web.service", "kamiyo-scheduler.service")
# What the units start and signal, made to exist under the verification root.
EXECUTABLES = ("srv/kamiyo/current/.venv/bin/gunicorn", "srv/kamiyo/current/.venv/bin/flask", "bin/kill", "bin/mkdir")


def tool(name: str, package: str) -> str:
    found = shutil.which(name) or next((p for p in (f"/usr/sbin/{name}", f"/usr/bin/{name}") if os.access(p, os.X_OK)),
                                       None)
    if found is None:
        pytest.fail(f"{name} is not installed: run `make test` (it installs Debian's {package} package)")
    return found


def verify(tmp_path: Path, units: dict[str, str]) -> subprocess.CompletedProcess:
    """`systemd-analyze verify --root` on the units, in a root holding the system's own units
    (sysinit.target, ...) and the programs the units name, so that only our files are judged."""
    root = tmp_path / "root"
    shutil.copytree("/lib/systemd/system", root / "lib" / "systemd" / "system", symlinks=True)
    (root / "etc" / "systemd" / "system").mkdir(parents=True)
    for name, text in units.items():
        (root / "etc" / "systemd" / "system" / name).write_text(text)
    for path in EXECUTABLES:
        (root / path).parent.mkdir(parents=True, exist_ok=True)
        (root / path).write_text("#!/bin/sh\n")
        (root / path).chmod(0o755)
    return subprocess.run([tool("systemd-analyze", "systemd"), "verify", f"--root={root}", *units],
                          capture_output=True, text=True, timeout=60)


def unit_texts() -> dict[str, str]:
    return {name: (DEPLOY / name).read_text() for name in UNITS}


def test_systemd_accepts_the_units(tmp_path):
    done = verify(tmp_path, unit_texts())
    # verify exits 0 on an unknown key or a bad value, with a line about it: both must be empty.
    assert done.returncode == 0 and not (done.stdout + done.stderr).strip(), done.stdout + done.stderr


def test_systemd_analyze_catches_a_misspelt_directive(tmp_path):
    units = unit_texts()
    units["kamiyo-web.service"] = units["kamiyo-web.service"].replace("ProtectSystem=strict", "ProtectSystem=strickt")
    done = verify(tmp_path, units)
    assert "ProtectSystem" in done.stdout + done.stderr or "protect system" in done.stdout + done.stderr


def service_section(name: str) -> dict[str, list[str]]:
    values: dict[str, list[str]] = {}
    # Every value of each key: systemd adds repeated keys up.
    for line in (DEPLOY / name).read_text().splitlines():
        if match := re.match(r"^([A-Za-z]+)=(.*)$", line):
            values.setdefault(match.group(1), []).append(match.group(2))
    return values


@pytest.mark.parametrize("name", UNITS)
def test_the_units_run_with_least_privilege(name):
    service = service_section(name)
    assert service["User"] == ["kamiyo"] and service["Group"] == ["kamiyo"]
    assert service["EnvironmentFile"] == ["/etc/kamiyo/kamiyo.env"]
    assert service["NoNewPrivileges"] == ["true"]
    assert service["ProtectSystem"] == ["strict"]
    assert service["ReadWritePaths"] == ["/srv/kamiyo/instance"]  # the instance folder, nothing else
    assert service["PrivateTmp"] == ["true"]
    assert service["Restart"] == ["on-failure"]
    assert service["UMask"] == ["0077"]
    assert service["WorkingDirectory"] == ["/srv/kamiyo/current"]


def test_the_web_unit_starts_gunicorn_and_reloads_with_hup():
    service = service_section("kamiyo-web.service")
    (start,) = service["ExecStart"]
    assert start.startswith("/srv/kamiyo/current/.venv/bin/gunicorn -c gunicorn.conf.py ")
    assert start.endswith(" wsgi:app")
    # release.sh signals the master named in this file, and the reload must follow `current`.
    assert "--pid /run/kamiyo-web/gunicorn.pid" in start and "--chdir /srv/kamiyo/current" in start
    assert "/run/kamiyo-web/gunicorn.pid" in (DEPLOY / "release.sh").read_text()
    assert service["ExecReload"] == ["/bin/kill -HUP $MAINPID"]


def test_the_scheduler_unit_runs_the_scheduler():
    assert service_section("kamiyo-scheduler.service")["ExecStart"] == [
        "/srv/kamiyo/current/.venv/bin/flask --app wsgi scheduler run"]


# --- logrotate and cron ------------------------------------------------------------------------


def logrotate_debug(tmp_path: Path, text: str) -> str:
    logs = tmp_path / "logs"
    logs.mkdir(exist_ok=True)
    (logs / "web.log").write_text('{"message": "a line"}\n')
    conf = tmp_path / "kamiyo"
    # Another folder, and the user running the test: the file's own `su kamiyo adm` names a user
    # this machine may not have.
    assert "/var/log/kamiyo/" in text and "su kamiyo adm" in text
    conf.write_text(text.replace("/var/log/kamiyo/", f"{logs}/").replace("su kamiyo adm", f"su {getpass.getuser()} "
                                                                                         f"{_group()}"))
    done = subprocess.run([tool("logrotate", "logrotate"), "-d", "-s", str(tmp_path / "state"), str(conf)],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return done.stdout + done.stderr


def _group() -> str:
    import grp

    return grp.getgrgid(os.getgid()).gr_name


def test_logrotate_accepts_the_file(tmp_path):
    out = logrotate_debug(tmp_path, (DEPLOY / "logrotate" / "kamiyo").read_text())
    errors = [line for line in out.splitlines() if line.startswith("error:")]
    assert not errors, out
    assert "considering log" in out and "web.log" in out


def test_logrotate_check_catches_an_unknown_option(tmp_path):
    text = (DEPLOY / "logrotate" / "kamiyo").read_text().replace("copytruncate", "copytruncat")
    assert "unknown option 'copytruncat'" in logrotate_debug(tmp_path, text)


FIELDS = [(0, 59), (0, 23), (1, 31), (1, 12), (0, 7)]  # minute hour day-of-month month day-of-week


def cron_field_ok(field: str, low: int, high: int) -> bool:
    for part in field.split(","):
        match = re.fullmatch(r"(\*|(\d+)(?:-(\d+))?)(?:/(\d+))?", part)
        if not match:
            return False
        start, end = match.group(2), match.group(3)
        for number in (start, end):
            if number is not None and not low <= int(number) <= high:
                return False
    return True


def test_the_crontab_line_runs_the_weekly_version_check():
    lines = [line for line in (DEPLOY / "cron" / "kamiyo").read_text().splitlines()
             if line.strip() and not line.startswith("#")]
    assert len(lines) == 1, lines
    fields = lines[0].split(None, 5)
    for field, (low, high) in zip(fields[:5], FIELDS, strict=True):
        assert cron_field_ok(field, low, high), f"bad cron field {field!r} in {lines[0]!r}"
    assert fields[:5] == ["0", "9", "*", "*", "1"]  # Monday 09:00, as the deployment checklist
    command = fields[5]
    assert command.startswith("/srv/kamiyo/current/deploy/kamiyo-env flask --app wsgi stripe-version check ")
    assert "%" not in command  # cron would cut the line there


def test_the_cron_field_check_can_fail():
    assert not cron_field_ok("61", 0, 59) and not cron_field_ok("mon", 0, 7) and cron_field_ok("*/15", 0, 59)
