"""Stripe's form encoding (`a[b][0][c]=x`), decoded into nested dicts and lists.

stripe-python encodes dicts as `a[b]=...` and lists as `a[0]=...`; an empty
value (`a=`) is Stripe's "unset". A dict whose keys are exactly 0..n-1 becomes
a list; `a[]=x` appends.
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import parse_qsl

_KEY = re.compile(r"^([^\[\]]+)((?:\[[^\[\]]*\])*)$")
_PART = re.compile(r"\[([^\[\]]*)\]")


def _parts(key: str) -> list[str]:
    match = _KEY.match(key)
    if not match:
        return [key]
    return [match.group(1), *_PART.findall(match.group(2))]


def decode_pairs(pairs: list[tuple[str, str]]) -> dict[str, Any]:
    root: dict[str, Any] = {}
    for key, value in pairs:
        parts = _parts(key)
        node = root
        for i, part in enumerate(parts):
            last = i == len(parts) - 1
            if part == "":  # `a[]=x`: append at the next free index
                part = str(len(node))
            if last:
                node[part] = value
            else:
                child = node.get(part)
                if not isinstance(child, dict):
                    child = node[part] = {}
                node = child
    return _listify(root)


def _listify(value: Any) -> Any:
    if not isinstance(value, dict):
        return value
    items = {key: _listify(child) for key, child in value.items()}
    if items and all(key.isdigit() for key in items) and sorted(map(int, items)) == list(range(len(items))):
        return [items[str(i)] for i in range(len(items))]
    return items


def decode(body: bytes | str) -> dict[str, Any]:
    if isinstance(body, bytes):
        body = body.decode("utf-8", errors="replace")
    return decode_pairs(parse_qsl(body, keep_blank_values=True))
