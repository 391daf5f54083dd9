"""The Stripe emulator (localstripe and its aiohttp server) is the demo's and the tests', never
production's: not in what production installs, and not needed by the service."""

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


def test_the_service_and_its_commands_run_without_the_emulator_installed(tmp_path):
    """As in a production virtualenv: importing localstripe or aiohttp fails (stripe-python
    itself tries aiohttp, and goes on without it)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KAMIYO_", "STRIPE_", "DATABASE_"))}
    env.update(TEST_SECRETS, KAMIYO_INSTANCE_PATH=str(tmp_path), STRIPE_API_BASE="https://api.stripe.com")
    code = (
        "import sys\n"
        "class NotInstalled:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        f"        if name.split('.')[0] in {EMULATOR!r}:\n"
        "            raise ModuleNotFoundError(name)\n"
        "sys.meta_path.insert(0, NotInstalled())\n"
        "import wsgi\n"
        "runner = wsgi.app.test_cli_runner()\n"
        "for args in (['--help'], ['demo', 'traffic', '--help'], ['db', 'upgrade'], ['preflight', '--help'], ['api-keys', 'list']):\n"
        "    result = runner.invoke(args=args)\n"
        "    assert result.exit_code == 0, (args, result.output, result.exception)\n"
        "with wsgi.app.test_client() as client:\n"
        "    assert client.get('/health').status_code == 200\n"
        "print('ran without the emulator')\n"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip().splitlines()[-1] == "ran without the emulator", done.stdout
