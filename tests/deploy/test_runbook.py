"""Every `flask --app wsgi ...` command that deploy/RUNBOOK.md and the README's "Deploy"
section tell an operator to run exists, with the options they give it."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from click.testing import CliRunner
from flask.cli import FlaskGroup

from kamiyo import create_app
from tests.support import TEST_SECRETS

ROOT = Path(__file__).resolve().parents[2]
DOCS = {"deploy/RUNBOOK.md": (ROOT / "deploy" / "RUNBOOK.md").read_text()}
README = (ROOT / "README.md").read_text()
if "\n## Deploy\n" in README:
    DOCS["README.md#deploy"] = README.split("\n## Deploy\n", 1)[1].split("\n## ", 1)[0]

COMMAND = re.compile(r"flask --app wsgi ((?:[a-z][a-z-]*)(?: [a-z][a-z-]*)*)([^\n`#|]*)")


def invocations(texts) -> dict[tuple[str, ...], set[str]]:
    """Each command named (its words), with the options given to it anywhere."""
    found: dict[tuple[str, ...], set[str]] = {}
    for text in texts:
        for words, rest in COMMAND.findall(text):
            options = set(re.findall(r"(?<![\w-])(--[a-z][a-z-]*)", rest))
            found.setdefault(tuple(words.split()), set()).update(options)
    return found


def problems(cli, named: dict[tuple[str, ...], set[str]]) -> list[str]:
    found = []
    for words, options in sorted(named.items()):
        # "scheduler run-job webhook-purge": the longest prefix that is a command.
        for size in range(len(words), 0, -1):
            code, text = cli(words[:size])
            usage = text.split("Usage:", 1)[1].split() if code == 0 and "Usage:" in text else []
            if usage[1:size + 1] == list(words[:size]):
                break
        else:
            found.append(f"flask --app wsgi {' '.join(words)}: no such command")
            continue
        for option in sorted(options - {"--help"}):
            if not re.search(rf"(?<![\w-]){re.escape(option)}(?![\w-])", text):
                found.append(f"flask --app wsgi {' '.join(words[:size])}: no option {option}")
    return found


def test_the_runbook_names_commands():
    named = invocations(DOCS.values())
    assert ("preflight",) in named and ("db", "restore") in named and ("api-keys", "revoke") in named


@pytest.fixture(scope="module")
def cli(tmp_path_factory):
    app = create_app({"TESTING": True, **TEST_SECRETS,
                      "SQLALCHEMY_DATABASE_URI": "sqlite:///" + str(tmp_path_factory.mktemp("runbook") / "k.db")})
    group = FlaskGroup(create_app=lambda: app)

    def help_of(words: tuple[str, ...]) -> tuple[int, str]:
        done = CliRunner().invoke(group, [*words, "--help"], catch_exceptions=False)
        return done.exit_code, done.output

    return help_of


def test_every_command_of_the_runbook_exists_with_its_options(cli):
    found = problems(cli, invocations(DOCS.values()))
    assert not found, "\n".join(found)


def test_a_misspelt_command_or_option_would_be_caught(cli):
    named = invocations(["`flask --app wsgi preflite`", "flask --app wsgi webhooks list --stat failed",
                         "flask --app wsgi report --since 1h"])
    assert problems(cli, named) == ["flask --app wsgi preflite: no such command",
                                    "flask --app wsgi webhooks list: no option --stat"]
