"""Files at rest: the instance folder is 0700, what the service creates is 0600 (umask 077 in
wsgi.py, gunicorn.conf.py and the demo runner), and start-up says how to fix what is looser."""

from __future__ import annotations

import logging
import os
import runpy
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support import ROOT, TEST_SECRETS, gunicorn, logged


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def _env(instance: Path, **settings: str) -> dict[str, str]:
    from kamiyo.config import DEFAULTS

    env = {k: v for k, v in os.environ.items() if k not in DEFAULTS and not k.startswith("KAMIYO_")}
    env.update(TEST_SECRETS, KAMIYO_INSTANCE_PATH=str(instance), **settings)
    return env


def test_a_missing_instance_folder_is_created_0700(make_app, tmp_path, monkeypatch):
    instance = tmp_path / "fresh" / "instance"
    monkeypatch.setenv("KAMIYO_INSTANCE_PATH", str(instance))
    make_app()
    assert mode(instance) == 0o700


def test_an_open_instance_folder_is_tightened(make_app, tmp_path, monkeypatch):
    instance = tmp_path / "checkout" / "instance"
    instance.mkdir(parents=True)
    instance.chmod(0o755)  # as git makes it in a fresh clone
    monkeypatch.setenv("KAMIYO_INSTANCE_PATH", str(instance))
    make_app()
    assert mode(instance) == 0o700


def test_the_cli_creates_the_database_0600_in_a_0700_folder(tmp_path):
    """`flask --app wsgi db upgrade` (what `make run` and a deploy run first) under a umask
    of 022, the usual login default, in an instance folder as a fresh clone has it (0755)."""
    instance = tmp_path / "cli"
    instance.mkdir()
    instance.chmod(0o755)
    flask = Path(sys.executable).with_name("flask")
    done = subprocess.run([flask, "--app", "wsgi", "db", "upgrade"], cwd=ROOT, env=_env(instance),
                          capture_output=True, text=True, timeout=120, preexec_fn=lambda: os.umask(0o022))
    assert done.returncode == 0, done.stderr
    files = [p for p in instance.iterdir() if p.name.startswith("kamiyo.db")]
    assert files and {p.name: mode(p) for p in files} == {p.name: 0o600 for p in files}
    assert mode(instance) == 0o700


def test_gunicorn_conf_sets_the_umask_its_workers_inherit():
    old = os.umask(0o022)
    try:
        settings = runpy.run_path(str(ROOT / "gunicorn.conf.py"))
        assert os.umask(0o022) == 0o077
    finally:
        os.umask(old)
    assert settings["umask"] == 0o077


def test_open_files_are_one_warning_with_the_fix(tmp_path, caplog):
    from kamiyo.hardening import permission_problems, warn_about_permissions

    instance = tmp_path / "open"
    instance.mkdir()
    instance.chmod(0o755)
    for name in ("kamiyo.db", "kamiyo.db-wal", "kamiyo.db-shm"):
        (instance / name).write_text("")
        (instance / name).chmod(0o644)
    uri = f"sqlite:///{instance}/kamiyo.db"
    with caplog.at_level(logging.WARNING, logger="kamiyo.security"):
        assert warn_about_permissions(str(instance), uri)
    [line] = [r.getMessage() for r in caplog.records if r.name == "kamiyo.security"]
    assert line.startswith(f"files readable by other users: {instance} (0755), {instance}/kamiyo.db (0644)")
    fix = line.split("fix: ", 1)[1]
    assert fix == (f"chmod 700 {instance} && chmod 600 {instance}/kamiyo.db && chmod 600 {instance}/kamiyo.db-wal"
                   f" && chmod 600 {instance}/kamiyo.db-shm")
    subprocess.run(fix, shell=True, check=True)
    assert permission_problems(str(instance), uri) == []


@pytest.mark.slow
def test_gunicorn_warns_once_at_start_about_a_readable_database(tmp_path):
    instance = tmp_path / "served"
    instance.mkdir(mode=0o700)
    database = f"sqlite:///{instance}/kamiyo.db"
    (instance / "kamiyo.db").touch(mode=0o644)  # as an older version left it; migrated by gunicorn()
    (instance / "kamiyo.db").chmod(0o644)
    with gunicorn(instance, database, LOG_LEVEL="INFO", METRICS_TOKEN="scraper-token-123"):
        pass
    warnings = [line for line in logged(instance) if line.get("event") == "insecure_file_permissions"]
    assert len(warnings) == 1, warnings  # the master's, not one a worker
    assert warnings[0]["level"] == "WARNING" and f"chmod 600 {instance}/kamiyo.db" in warnings[0]["message"]
    assert not [line for line in logged(instance) if line.get("setting") == "METRICS_TOKEN"]
