"""deploy/kamiyo.env.example lists every setting of kamiyo/config.py with its default, and
nothing the service does not read: it cannot go stale unnoticed."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from kamiyo.config import DEFAULTS, ConfigError, _coerce

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "deploy" / "kamiyo.env.example"

# Read by gunicorn.conf.py or create_app() from the environment, not settings of DEFAULTS.
PROCESS_SETTINGS = {"HOST", "PORT", "WEB_CONCURRENCY", "GUNICORN_THREADS", "KAMIYO_INSTANCE_PATH"}

# `NAME=value` (set for this deployment) or `#NAME=value` (the default, shown).
LINE = re.compile(r"^(#?)([A-Z][A-Z0-9_]*)=(.*)$")


def render(default: Any) -> str:
    """A default as the env file writes it (and _coerce reads it back)."""
    if default is None:
        return ""
    if isinstance(default, bool):
        return "true" if default else "false"
    if isinstance(default, float):
        return f"{default:g}"
    return str(default)


def entries(text: str) -> dict[str, tuple[bool, str]]:
    found = {}
    for line in text.splitlines():
        if match := LINE.match(line.strip()):
            commented, name, value = match.groups()
            found[name] = (bool(commented), value.strip())
    return found


def problems(text: str) -> list[str]:
    found = entries(text)
    missing = [f"#{name}={render(default)}" for name, default in DEFAULTS.items() if name not in found]
    unknown = sorted(set(found) - set(DEFAULTS) - PROCESS_SETTINGS)
    stale = []
    for name, (commented, value) in found.items():
        if not commented or name not in DEFAULTS:
            continue  # a value chosen for the deployment, not a shown default
        default = DEFAULTS[name]
        try:
            same = (value == "") if default is None else _coerce(value, default) == default
        except (ValueError, ConfigError):
            same = False
        if not same:
            stale.append(f"#{name}={render(default)}   (the file says {value!r})")
    out = []
    if missing:
        out.append("add these lines to deploy/kamiyo.env.example (settings of kamiyo/config.py it lacks):\n  "
                   + "\n  ".join(missing))
    if unknown:
        out.append("remove these lines (no such setting in kamiyo/config.py DEFAULTS): " + ", ".join(unknown))
    if stale:
        out.append("change these lines to the current default:\n  " + "\n  ".join(stale))
    return out


def test_every_setting_is_listed_with_its_default():
    found = problems(EXAMPLE.read_text())
    assert not found, "\n".join(found)


def test_a_new_setting_is_named_with_the_line_to_add(monkeypatch):
    monkeypatch.setitem(DEFAULTS, "A_SETTING_ADDED_LATER", 7)
    monkeypatch.setitem(DEFAULTS, "ANOTHER_ONE", None)
    [found] = problems(EXAMPLE.read_text())
    assert found.startswith("add these lines to deploy/kamiyo.env.example (settings of kamiyo/config.py it lacks):\n")
    assert found.endswith("\n  #A_SETTING_ADDED_LATER=7\n  #ANOTHER_ONE=")


def test_an_unknown_or_stale_line_is_named():
    text = EXAMPLE.read_text() + "\nNO_SUCH_SETTING=1\n"
    text = text.replace("#BREAKER_FAIL_MAX=5", "#BREAKER_FAIL_MAX=6")
    found = problems(text)
    assert "remove these lines (no such setting in kamiyo/config.py DEFAULTS): NO_SUCH_SETTING" in found
    assert "change these lines to the current default:\n  #BREAKER_FAIL_MAX=5   (the file says '6')" in found


def test_the_required_secrets_are_left_empty_so_a_copy_cannot_start_with_a_placeholder():
    found = entries(EXAMPLE.read_text())
    for name in ("SECRET_KEY", "STRIPE_SECRET_KEY", "STRIPE_WEBHOOK_SECRET"):
        assert found[name] == (False, ""), name
    assert found["TRUSTED_PROXY_COUNT"] == (False, "1")  # one proxy: deploy/nginx/kamiyo.conf
