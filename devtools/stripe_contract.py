"""Contract checks: does a request we sent to Stripe match Stripe's published
OpenAPI spec?

The spec lives outside the repository, in `../shared/stripe-openapi/` next to
the repo (override with STRIPE_OPENAPI_DIR). A concrete path is matched to its
template (`/v1/customers/cus_1` -> `/v1/customers/{customer}`); a POST's form
body is checked against the operation's `application/x-www-form-urlencoded`
schema, a GET's or DELETE's query against its query parameters.

Forms carry only strings, so values are first converted where the schema asks
for integers, numbers or booleans. Stripe rejects unknown parameters at every
level, while the spec marks only the top level `additionalProperties: false`:
nested objects that list their properties are closed here too.
"""

from __future__ import annotations

import copy
import gzip
import json
import os
import re
from pathlib import Path
from typing import Any

from jsonschema import Draft4Validator
from jsonschema.exceptions import ValidationError, best_match

REPO_ROOT = Path(__file__).resolve().parent.parent
_INT = re.compile(r"-?\d+")
_FORM = "application/x-www-form-urlencoded"


BUNDLED_SPEC_DIR = Path(__file__).resolve().parent / "stripe-openapi"


def default_spec_dir() -> Path:
    """STRIPE_OPENAPI_DIR, else ../shared/stripe-openapi beside the repo, else the bundled copy."""
    configured = os.environ.get("STRIPE_OPENAPI_DIR")
    if configured:
        return Path(configured)
    shared = REPO_ROOT.parent / "shared" / "stripe-openapi"
    return shared if any(shared.glob("*.json")) else BUNDLED_SPEC_DIR


class StripeContract:
    _cache: dict[Path, "StripeContract"] = {}

    def __init__(self, spec: dict[str, Any], name: str) -> None:
        self.spec = spec
        self.name = name
        self._templates = sorted(
            ((_template_regex(template), template) for template in spec["paths"]),
            # Literal segments win over parameters: /v1/customers/search before /v1/customers/{customer}.
            key=lambda item: (item[1].count("{"), -len(item[1])))
        self._validators: dict[tuple[str, str], tuple[dict, Draft4Validator] | None] = {}

    @classmethod
    def load(cls, spec_dir: Path | None = None) -> "StripeContract":
        """Parse the spec once per process (it is a 4 MB JSON file)."""
        folder = Path(spec_dir) if spec_dir else default_spec_dir()
        files = (sorted(folder.glob("spec3*.json")) or sorted(folder.glob("*.json"))
                 or sorted(folder.glob("spec3*.json.gz")))
        if not files:
            raise FileNotFoundError(
                f"no Stripe OpenAPI spec (spec3*.json) in {folder}; set STRIPE_OPENAPI_DIR to its folder")
        path = files[-1].resolve()
        if path not in cls._cache:
            opener = gzip.open if path.suffix == ".gz" else open
            with opener(path, "rt", encoding="utf-8") as handle:
                cls._cache[path] = cls(json.load(handle), path.name)
        return cls._cache[path]

    def template_for(self, path: str) -> str | None:
        path = path.split("?", 1)[0]
        for regex, template in self._templates:
            if regex.match(path):
                return template
        return None

    def validate(self, method: str, path: str, form: dict) -> list[str]:
        """[] when the request matches the spec; otherwise what is wrong, one line each."""
        method = method.upper()
        where = f"{method} {path}"
        template = self.template_for(path)
        if template is None:
            return [f"{where}: no such path in Stripe's OpenAPI spec ({self.name})"]
        operation = self.spec["paths"][template].get(method.lower())
        if not isinstance(operation, dict):
            return [f"{where}: Stripe's spec ({self.name}) has no {method} operation on {template}"]
        schema, validator = self._validator(template, method, operation)
        instance = _coerce(schema, form or {}, self.spec)
        problems = []
        for error in sorted(validator.iter_errors(instance), key=lambda e: list(map(str, e.absolute_path))):
            problems.append(f"{where} ({template}): {_describe(error)}")
        return problems

    def _validator(self, template: str, method: str, operation: dict) -> tuple[dict, Draft4Validator]:
        key = (template, method)
        if key not in self._validators:
            if method == "POST":
                content = operation.get("requestBody", {}).get("content", {})
                schema = content.get(_FORM, {}).get("schema") or {"type": "object", "properties": {}}
            else:
                params = [p for p in operation.get("parameters", []) if p.get("in") == "query"]
                schema = {"type": "object", "properties": {p["name"]: p.get("schema", {}) for p in params},
                          "required": [p["name"] for p in params if p.get("required")] or None}
                if schema["required"] is None:
                    del schema["required"]
            schema = _closed(_inline_refs(copy.deepcopy(schema), self.spec))
            schema["additionalProperties"] = False
            self._validators[key] = (schema, Draft4Validator(schema))
        return self._validators[key]


def _template_regex(template: str) -> re.Pattern[str]:
    parts = re.split(r"(\{[^}]+\})", template)
    return re.compile("^" + "".join("[^/]+" if p.startswith("{") else re.escape(p) for p in parts) + "$")


def _resolve(schema: Any, spec: dict) -> Any:
    seen = 0
    while isinstance(schema, dict) and "$ref" in schema and seen < 50:
        node: Any = spec
        for part in schema["$ref"].lstrip("#/").split("/"):
            node = node[part.replace("~1", "/").replace("~0", "~")]
        schema, seen = node, seen + 1
    return schema


def _inline_refs(schema: Any, spec: dict, depth: int = 0) -> Any:
    if depth > 30:  # a recursive schema: leave the rest unchecked rather than loop
        return {}
    schema = _resolve(schema, spec)
    if isinstance(schema, dict):
        return {k: _inline_refs(v, spec, depth + 1) for k, v in schema.items()}
    if isinstance(schema, list):
        return [_inline_refs(v, spec, depth + 1) for v in schema]
    return schema


def _closed(schema: Any) -> Any:
    """Stripe rejects unknown nested parameters too: close every object that lists its properties."""
    if isinstance(schema, dict):
        if "properties" in schema and "additionalProperties" not in schema:
            schema["additionalProperties"] = False
        for value in schema.values():
            _closed(value)
    elif isinstance(schema, list):
        for value in schema:
            _closed(value)
    return schema


def _types(schema: dict) -> set[str]:
    kind = schema.get("type")
    return {kind} if isinstance(kind, str) else set(kind or ())


def _convert_scalar(schema: dict, value: str) -> Any:
    kinds = _types(schema)
    if "integer" in kinds and _INT.fullmatch(value):
        return int(value)
    if "number" in kinds:
        try:
            return float(value)
        except ValueError:
            pass
    if "boolean" in kinds and value in ("true", "false"):
        return value == "true"
    return value


def _coerce(schema: Any, value: Any, spec: dict) -> Any:
    """Turn the form's strings (and index-keyed dicts/lists) into what the schema expects."""
    schema = _resolve(schema, spec)
    if not isinstance(schema, dict):
        return value
    branches = schema.get("anyOf") or schema.get("oneOf")
    if branches:
        return _coerce(_pick_branch([_resolve(b, spec) for b in branches], value), value, spec)
    kinds = _types(schema)
    if isinstance(value, str):
        return _convert_scalar(schema, value)
    if isinstance(value, list) and "object" in kinds and "array" not in kinds:
        value = {str(i): item for i, item in enumerate(value)}
    if isinstance(value, dict) and "array" in kinds and "object" not in kinds and all(k.isdigit() for k in value):
        value = [value[k] for k in sorted(value, key=int)]
    if isinstance(value, dict):
        properties = schema.get("properties", {})
        extra = schema.get("additionalProperties")
        return {k: _coerce(properties.get(k, extra if isinstance(extra, dict) else None), v, spec)
                for k, v in value.items()}
    if isinstance(value, list):
        return [_coerce(schema.get("items"), item, spec) for item in value]
    return value


def _pick_branch(branches: list[dict], value: Any) -> dict:
    """The anyOf branch the value was meant for (Stripe's `""` means "unset")."""
    if isinstance(value, str):
        for branch in branches:
            if "string" in _types(branch) and ("enum" not in branch or value in branch["enum"]):
                return branch
        for branch in branches:
            if _convert_scalar(branch, value) is not value:
                return branch
    else:
        wanted = "object" if isinstance(value, dict) else "array"
        for kind in (wanted, "array" if wanted == "object" else "object"):
            for branch in branches:
                if kind in _types(branch):
                    return branch
    return branches[0]


def _location(path) -> str:
    parts = [str(p) for p in path]
    return parts[0] + "".join(f"[{p}]" for p in parts[1:]) if parts else "(body)"


def _describe(error: ValidationError) -> str:
    if error.context:  # anyOf/oneOf: say what is wrong in the branch meant for the value
        # Drop "wrong type"/"not ''" complaints from branches the value was never meant for.
        meant = [e for e in error.context if e.relative_path or e.validator not in ("type", "enum")]
        error = best_match(meant or error.context)
    if error.validator == "additionalProperties" and error.validator_value is False:
        known = set(error.schema.get("properties", {}))
        unknown = sorted(set(error.instance) - known)
        prefix = _location(error.absolute_path)
        names = ", ".join(f"{prefix}[{name}]" if error.absolute_path else name for name in unknown)
        return f"unknown parameter(s): {names}"
    return f"{_location(error.absolute_path)}: {error.message}"
