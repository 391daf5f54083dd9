"""JSON depth, checked before anything parses a client's body.

Python's json parser recurses once per level of nesting, so a body of 100,000
`[` raises RecursionError (an answer 500) wherever it is parsed. Bodies nested
deeper than MAX_DEPTH are refused before any parser sees them.
"""

from __future__ import annotations

import json
import re
from itertools import accumulate

# Stripe's events nest under 10 levels, our API's bodies 1.
MAX_DEPTH = 32

# A JSON string, or an unterminated one up to the end: were an unterminated string
# not a match, each later quote would start another scan to the end (quadratic).
_STRING_RE = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"?', re.DOTALL)
_NOT_BRACKET = bytes(sorted(set(range(256)) - set(b"[]{}")))
_NOT_QUOTE_OR_BRACKET = bytes(sorted(set(range(256)) - set(b'"[]{}')))
_STEP = {ord("["): 1, ord("{"): 1, ord("]"): -1, ord("}"): -1}


def too_deep(body: bytes, limit: int = MAX_DEPTH) -> bool:
    """Whether the JSON `body` nests arrays and objects more than `limit` levels deep.

    Each level takes one `[` or `{`: a body with no more of them than `limit`
    (most Stripe events and API bodies) is cleared by two C-level counts.
    """
    if body.count(b"[") + body.count(b"{") <= limit:
        return False
    return nesting_depth(body) > limit


def nesting_depth(body: bytes) -> int:
    """How deep arrays and objects nest in the JSON `body`; brackets inside strings do not count.

    Never less than the depth a JSON parser reaches before it finishes or stops
    at its first error, so a body within the bound cannot make it recurse deeper.
    """
    encoding = json.detect_encoding(body)  # as json.loads reads bytes
    if not encoding.startswith("utf-8"):  # UTF-16/32: a quote or bracket byte may be half a character
        body = body.decode(encoding, "replace").encode()
    return _deepest(_brackets_outside_strings(body))


def _brackets_outside_strings(body: bytes) -> bytes:
    if b"\\" in body:
        # An escaped quote does not end its string: match the strings one by one.
        return _STRING_RE.sub(b"", body).translate(None, _NOT_BRACKET)
    # No escapes: every other quote opens a string, so splitting on quotes (all in C)
    # leaves the text outside strings at the even places.
    return b"".join(body.translate(None, _NOT_QUOTE_OR_BRACKET).split(b'"')[0::2])


def _deepest(brackets: bytes) -> int:
    # +1 for each opener, -1 for each closer: the deepest level is the largest running sum
    # (below 0 after a stray closer, where a parser stops).
    return max(0, max(accumulate(map(_STEP.__getitem__, brackets)), default=0))
