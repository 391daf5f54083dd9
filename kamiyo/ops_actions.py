"""Actions a feature offers to the operators' tools (the dashboard's buttons), by name.

A feature registers each at init_app; the dashboard calls them by name, so it never imports
the feature. An action returns (outcome, message): outcome is ok, failed or refused.
"""

from __future__ import annotations

from collections.abc import Callable

from flask import Flask, current_app

KEY = "kamiyo_ops_actions"
Action = Callable[[str], tuple[str, str]]


def register_action(app: Flask, name: str, action: Action) -> None:
    app.extensions.setdefault(KEY, {})[name] = action


def run_action(name: str, target: str) -> tuple[str, str]:
    action: Action | None = current_app.extensions.get(KEY, {}).get(name)
    if action is None:
        return "failed", f"no action {name!r} in this service"
    return action(target)
