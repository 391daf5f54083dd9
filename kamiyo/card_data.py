"""Card numbers in free text: found once, here, for log redaction and for input validation.

A card number is 13-19 digits passing Luhn, printed as one block or as
groups joined by single spaces or dashes (4-4-4-4, Amex 4-6-5, ...).
"""

from __future__ import annotations

import re

# Pre-check: a stretch of 13+ digits/spaces/dashes. A superset of what can
# hold a card, but one cheap C-level scan that ordinary text (timestamps,
# status codes, durations, phone numbers) fails.
_CARD_HINT_RE = re.compile(r"[0-9][0-9 -]{11,}[0-9]")
# A maximal run of digit groups joined by single spaces or dashes.
_DIGIT_RUN_RE = re.compile(r"[0-9]+(?:[ -][0-9]+)*")
_GROUP_SPLIT_RE = re.compile(r"([ -])")

MIN_DIGITS = 13
MAX_DIGITS = 19


def luhn_ok(digits: str) -> bool:
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = ord(ch) - 48
        if i & 1:
            d *= 2
            if d > 9:
                d -= 9
        total += d
    return total % 10 == 0


def is_card_digits(digits: str) -> bool:
    return MIN_DIGITS <= len(digits) <= MAX_DIGITS and luhn_ok(digits)


def _card_of_groups(groups: list[str]) -> list[int]:
    """For each digit group, the index of the first group of the card it belongs to, or -1.

    Cards are printed in whole groups (4242 4242 ... or one block), so
    candidates are runs of whole groups holding 13-19 digits. A single 20+
    digit block can never be part of a candidate: it is not a card. Being
    group-aligned also means a card next to another number
    ("2024-01-15 4242424242424242") is still found.
    """
    n = len(groups)
    card_of = [-1] * n
    i = 0
    while i < n:
        best = -1
        total = 0
        for j in range(i, n):
            total += len(groups[j])
            if total > MAX_DIGITS:
                break
            if total >= MIN_DIGITS and luhn_ok("".join(groups[i : j + 1])):
                best = j  # prefer the longest valid candidate
        if best >= 0:
            for k in range(i, best + 1):
                card_of[k] = i
            i = best + 1
        else:
            i += 1
    return card_of


def _run_has_card(run: str) -> bool:
    groups = _GROUP_SPLIT_RE.split(run)[0::2]
    return sum(map(len, groups)) >= MIN_DIGITS and max(_card_of_groups(groups)) >= 0


def _redact_run(run: str, marker: str) -> str:
    parts = _GROUP_SPLIT_RE.split(run)  # [group, sep, group, sep, ...]
    groups = parts[0::2]
    if sum(map(len, groups)) < MIN_DIGITS:
        return run
    card_of = _card_of_groups(groups)
    if max(card_of) < 0:
        return run
    n = len(groups)
    out: list[str] = []
    for k in range(n):
        same_card_as_next = k < n - 1 and card_of[k] >= 0 and card_of[k] == card_of[k + 1]
        if card_of[k] < 0:
            out.append(groups[k])
        elif k == 0 or card_of[k - 1] != card_of[k]:
            out.append(marker)  # one marker per card
        if k < n - 1 and not same_card_as_next:
            out.append(parts[2 * k + 1])
    return "".join(out)


def contains_card_number(text: str) -> bool:
    """Whether `text` holds a card number anywhere (alone, or among other words and numbers)."""
    if _CARD_HINT_RE.search(text) is None:
        return False
    return any(_run_has_card(match.group(0)) for match in _DIGIT_RUN_RE.finditer(text))


def redact_card_numbers(text: str, marker: str) -> str:
    """`text` with each card number replaced by `marker`; other numbers are kept."""
    if _CARD_HINT_RE.search(text) is None:
        return text

    def replace(match: re.Match) -> str:
        return _redact_run(match.group(0), marker)

    return _DIGIT_RUN_RE.sub(replace, text)


def mask_card_numbers(text: str, char: str) -> str:
    """`text` with every character of each card number (its separators too) replaced by `char`:
    the same length as `text`, so a caller can tell where the cards were."""
    if _CARD_HINT_RE.search(text) is None:
        return text

    def replace(match: re.Match) -> str:
        parts = _GROUP_SPLIT_RE.split(match.group(0))
        groups = parts[0::2]
        if sum(map(len, groups)) < MIN_DIGITS:
            return match.group(0)
        card_of = _card_of_groups(groups)
        out: list[str] = []
        for k, group in enumerate(groups):
            out.append(char * len(group) if card_of[k] >= 0 else group)
            if k < len(groups) - 1:
                separator = parts[2 * k + 1]
                inside = card_of[k] >= 0 and card_of[k] == card_of[k + 1]
                out.append(char * len(separator) if inside else separator)
        return "".join(out)

    return _DIGIT_RUN_RE.sub(replace, text)
