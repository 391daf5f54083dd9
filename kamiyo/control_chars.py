"""Control characters: the one rule for which characters count as control characters,
whether a caller refuses a text that has them or replaces them.

The rule is C0 (U+0000-U+001F, tab and newline among them) and DEL (U+007F):
nothing a name, an address or a one-line text needs, and NUL cannot even be
stored in PostgreSQL text. C1 (U+0080-U+009F) is not in it: the texts held to
the rule take any character above ASCII. A caller that keeps a text to printable
ASCII widens the rule with `beyond_ascii`, which takes C1 with everything else
above ASCII.
"""

from __future__ import annotations

import functools
import re

# The rule as the body of a regex character class, for patterns that refuse more
# than control characters in one class (users.EMAIL_RE).
CONTROL = r"\x00-\x1f\x7f"
BEYOND_ASCII = r"\x80-\U0010ffff"


@functools.cache
def control_re(beyond_ascii: bool = False) -> re.Pattern[str]:
    """A run of control characters (and, with `beyond_ascii`, of any character above ASCII)."""
    return re.compile(f"[{CONTROL}{BEYOND_ASCII if beyond_ascii else ''}]+")


def has_control(text: str, *, beyond_ascii: bool = False) -> bool:
    """For callers that refuse a text with a control character in it."""
    return control_re(beyond_ascii).search(text) is not None


def replace_control(text: str, replacement: str, *, beyond_ascii: bool = False) -> str:
    """For callers that keep the text: each run of control characters becomes one `replacement`."""
    return control_re(beyond_ascii).sub(replacement, text)
