"""scripts/install-requirements.sh: uv when it can be had, plain pip otherwise; and make says so."""

from __future__ import annotations

import subprocess

from tests.support import ROOT

SCRIPT = ROOT / "scripts" / "install-requirements.sh"


def fake_venv(tmp_path, uv_available: bool, uv_works: bool = True):
    """A .venv whose pip and uv only record how they were called; pip "installs" uv by copying it."""
    bin_dir = tmp_path / "venv" / "bin"
    bin_dir.mkdir(parents=True)
    log = tmp_path / "calls"
    uv = tmp_path / "uv"
    uv.write_text(f'#!/bin/sh\necho "uv $*" >> {log}\nexit {0 if uv_works else 1}\n')
    uv.chmod(0o755)
    get_uv = f"cp {uv} {bin_dir}/uv" if uv_available else "exit 1"
    (bin_dir / "pip").write_text(f'#!/bin/sh\necho "pip $*" >> {log}\ncase "$*" in *" uv") {get_uv};; esac\n')
    (bin_dir / "pip").chmod(0o755)
    return tmp_path / "venv", log


def install(venv) -> subprocess.CompletedProcess:
    return subprocess.run([SCRIPT, str(venv), "requirements.txt"], capture_output=True, text=True, timeout=30)


def test_uv_installs_when_pypi_has_it(tmp_path):
    venv, log = fake_venv(tmp_path, uv_available=True)
    assert install(venv).returncode == 0
    calls = log.read_text().splitlines()
    assert calls[0].endswith("install --quiet --disable-pip-version-check uv")
    assert calls[1].startswith("uv pip install --quiet --python") and calls[1].endswith("-r requirements.txt")
    assert len(calls) == 2


def test_plain_pip_when_uv_cannot_be_had_or_fails(tmp_path):
    for case, (available, works) in {"missing": (False, True), "failing": (True, False)}.items():
        venv, log = fake_venv(tmp_path / case, uv_available=available, uv_works=works)
        done = install(venv)
        assert done.returncode == 0, done.stderr
        assert "installing with pip instead" in done.stdout
        assert log.read_text().splitlines()[-1] == "pip install --quiet --disable-pip-version-check -r requirements.txt"


def test_the_first_run_says_what_it_does_before_installing():
    recipe = subprocess.run(["make", "-n", "-W", "requirements.txt", "run"], cwd=ROOT, capture_output=True,
                            text=True, timeout=30).stdout
    assert recipe.index("Installing dependencies into .venv") < recipe.index("install-requirements.sh .venv requirements.txt")
