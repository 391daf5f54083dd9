"""The Stripe emulator (localstripe and its aiohttp server) is the demo's and the tests', never
production's: not in what production installs, and not loaded by the service."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from tests.support import TEST_SECRETS

ROOT = Path(__file__).resolve().parents[2]
EMULATOR = ("localstripe", "aiohttp")


def installed_by(name: str) -> set[str]:
    """The packages a requirements file names, following its `-r` includes."""
    found: set[str] = set()
    for line in (ROOT / name).read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line.startswith("-r "):
            found |= installed_by(line[3:].strip())
        elif line:
            found.add(re.split(r"[=<>~!\[; ]", line, maxsplit=1)[0].lower())
    return found


def test_production_requirements_leave_the_emulator_out():
    runtime = installed_by("requirements.txt")
    assert not runtime & set(EMULATOR), sorted(runtime & set(EMULATOR))
    # ... while the demo and the tests still get it.
    assert set(EMULATOR) <= installed_by("requirements-demo.txt")
    assert set(EMULATOR) <= installed_by("requirements-dev.txt")


def test_the_service_and_its_commands_never_import_the_emulator(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KAMIYO_", "STRIPE_", "DATABASE_"))}
    env.update(TEST_SECRETS, KAMIYO_INSTANCE_PATH=str(tmp_path), STRIPE_API_BASE="https://api.stripe.com")
    code = (
        "import sys, wsgi\n"
        "from click.testing import CliRunner\n"
        "runner = wsgi.app.test_cli_runner()\n"
        "for args in (['--help'], ['preflight', '--help'], ['api-keys', 'list']):\n"
        "    runner.invoke(args=args)\n"
        "print(sorted({m.split('.')[0] for m in sys.modules} & {'localstripe', 'aiohttp'}))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip().splitlines()[-1] == "[]", done.stdout
