"""Imports point one way: features → core, never feature → feature or core → feature.

Read from the source's AST, so an import inside a function counts as much as one
at the top. stripe-python is imported only inside kamiyo/stripe_gateway/.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

KAMIYO = Path(__file__).resolve().parent.parent / "kamiyo"
FEATURES = frozenset({"payments", "webhooks", "versioning", "dashboard", "release"})
# Features that show the others: they may import another feature's `queries` module, only.
READERS = frozenset({"dashboard", "release"})

# (importing file, imported feature): why this one may.
ALLOWED = {
    ("kamiyo/__init__.py", "payments"): "create_app composes the features: it calls each init_app",
    ("kamiyo/__init__.py", "webhooks"): "create_app composes the features: it calls each init_app",
    ("kamiyo/__init__.py", "versioning"): "create_app composes the features: it calls each init_app",
    ("kamiyo/__init__.py", "dashboard"): "create_app composes the features: it calls each init_app",
    ("kamiyo/__init__.py", "release"): "create_app composes the features: it calls each init_app",
}


def module_name(path: Path) -> tuple[str, str]:
    """(the module's dotted name, the package its relative imports start from)."""
    parts = path.relative_to(KAMIYO.parent).with_suffix("").parts
    if parts[-1] == "__init__":
        return ".".join(parts[:-1]), ".".join(parts[:-1])
    return ".".join(parts), ".".join(parts[:-1])


def owner(module: str) -> str:
    """The feature a kamiyo module belongs to, or "core"."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[1] in FEATURES else "core"


def imported_modules(source: str, package: str) -> list[tuple[int, str]]:
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            # `from . import payments` names a module in what it imports.
            found += [(node.lineno, f"{module}.{alias.name}") for alias in node.names]
    return found


def _is_queries_module(target: str) -> bool:
    """kamiyo.<feature>.queries, or a name imported from it."""
    parts = target.split(".")
    return len(parts) in (3, 4) and parts[2] == "queries"


def violations(path: Path, source: str) -> list[str]:
    module, package = module_name(path)
    shown = path.relative_to(KAMIYO.parent).as_posix()
    here = owner(module)
    wrong = []
    for line, target in imported_modules(source, package):
        if target.split(".")[0] == "stripe" and not module.startswith("kamiyo.stripe_gateway"):
            wrong.append(f"{shown}:{line} imports stripe-python outside kamiyo/stripe_gateway/")
        if not target.startswith("kamiyo."):
            continue
        there = owner(target)
        if there in ("core", here) or (shown, there) in ALLOWED:
            continue
        if here in READERS and _is_queries_module(target):
            continue
        wrong.append(f"{shown}:{line} ({here}) imports {target} ({there})")
    return wrong


def test_imports_point_from_features_to_the_core():
    found = [v for path in sorted(KAMIYO.rglob("*.py")) for v in violations(path, path.read_text())]
    assert found == []


def test_every_allowed_import_is_still_needed():
    needed = {
        (path.relative_to(KAMIYO.parent).as_posix(), owner(target))
        for path in KAMIYO.rglob("*.py")
        for _, target in imported_modules(path.read_text(), module_name(path)[1])
        if target.startswith("kamiyo.")
    }
    assert set(ALLOWED) <= needed


@pytest.mark.parametrize(
    ("where", "source", "complaint"),
    [
        ("webhooks/inbox.py", "from ..payments.models import PaymentOperation", "(webhooks) imports kamiyo.payments"),
        ("versioning/jobs.py", "def f():\n    from ..payments import views", "(versioning) imports kamiyo.payments"),
        ("http_errors.py", "from .payments.errors import x", "(core) imports kamiyo.payments"),
        ("health.py", "from . import webhooks", "(core) imports kamiyo.webhooks"),
        ("payments/views.py", "import kamiyo.versioning.jobs", "(payments) imports kamiyo.versioning"),
        ("webhooks/verify.py", "import stripe", "imports stripe-python outside"),
        ("config.py", "from stripe import api_version", "imports stripe-python outside"),
        ("dashboard/views.py", "from ..webhooks import inbox", "(dashboard) imports kamiyo.webhooks"),
        ("dashboard/views.py", "from ..payments.models import PaymentOperation", "(dashboard) imports kamiyo.payments"),
        ("payments/queries.py", "from ..webhooks import queries", "(payments) imports kamiyo.webhooks"),
    ],
)
def test_the_checker_catches_each_kind_of_wrong_import(where, source, complaint):
    [found] = violations(KAMIYO / where, source)
    assert complaint in found


@pytest.mark.parametrize(
    ("where", "source"),
    [
        ("payments/views.py", "from ..health import register_health_check"),
        ("payments/views.py", "from . import service"),
        ("webhooks/__init__.py", "from .models import WebhookEvent"),
        ("stripe_gateway/gateway.py", "import stripe"),
        ("payments/phases.py", "from ..stripe_gateway.library import StripeError"),
        ("dashboard/views.py", "from ..webhooks import queries as webhooks"),
        ("dashboard/actions.py", "from ..payments.queries import RECONCILE_JOB"),
    ],
)
def test_the_checker_lets_the_right_imports_through(where, source):
    assert violations(KAMIYO / where, source) == []
