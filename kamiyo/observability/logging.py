"""JSON logging with redaction in front of every handler.

One JSON object per line (python-json-logger). Every record that reaches the
Kamiyo handler -- including records propagated from the ``stripe`` logger --
goes through :class:`RequestContextFilter` (adds the request's correlation id)
and :class:`RedactionFilter` (removes Stripe keys, webhook secrets,
Authorization values, card numbers and CVCs). Logs must never contain secret
keys, webhook secrets, card numbers or raw correlation ids.

Note: this module is ``kamiyo.observability.logging``; inside it the name
``logging`` is the standard library (absolute imports).
"""

from __future__ import annotations

import collections
import contextlib
import datetime as _dt
import decimal
import enum
import logging
import re
import sys
import uuid
from collections.abc import Iterator
from contextvars import ContextVar
from typing import Any, TextIO

import click
from flask import g, has_request_context
from pythonjsonlogger.json import JsonFormatter

from ..card_data import is_card_digits, mask_card_numbers, redact_card_numbers

__all__ = [
    "RedactionFilter",
    "RequestContextFilter",
    "configure_logging",
    "on_behalf_of",
    "redact",
]

REDACTED = "[REDACTED]"
REDACTED_CARD = "[REDACTED CARD]"

# --------------------------------------------------------------------------
# Patterns -- compiled once; redact() runs on every log line.
# --------------------------------------------------------------------------

# sk_test_/sk_live_/rk_test_/rk_live_ + anything alnum, or bare sk_/rk_ + 8+
# alnum. The look-behind keeps words such as "task_12345678" intact; the
# prefix is kept so a log still says which kind of key was involved.
_STRIPE_KEY_RE = re.compile(
    r"(?<![A-Za-z0-9])((?:sk|rk)_(?:test|live)_)[A-Za-z0-9]+"
    r"|(?<![A-Za-z0-9])((?:sk|rk)_)[A-Za-z0-9]{8,}"
)

_WHSEC_RE = re.compile(r"whsec_[A-Za-z0-9+/=_-]+")

# Our own API keys: "kmy_" + token_urlsafe(32). The first 8 characters after "kmy_" are the
# key's public prefix (kamiyo.api_keys.VISIBLE_CHARS, shown in `api-keys list`): kept, so a log
# still says which key it was; the rest is removed. A prefix alone is left as it is.
_KMY_KEY_RE = re.compile(r"(?<![A-Za-z0-9])(kmy_[A-Za-z0-9_-]{8})[A-Za-z0-9_-]+")

# A bearer token wherever it appears (a header echoed in an error, a curl line, a URL):
# "Bearer x", "Bearer%20x", "Bearer+x". Characters of RFC 6750's b64token.
_BEARER_RE = re.compile(r"(?<![A-Za-z0-9])(bearer)(?:\s+|%20|\+)[A-Za-z0-9._~+/=-]+", re.IGNORECASE)

# Configured secrets with no recognisable shape (METRICS_TOKEN): removed by value. Shorter
# values are not registered, since they would cut ordinary words out of every line.
MIN_LITERAL_SECRET = 8
_literal_secrets: tuple[str, ...] = ()


def register_secret(value: str | None) -> None:
    """Redact `value` wherever it appears in a log line, from now on in this process."""
    global _literal_secrets
    if value and len(value) >= MIN_LITERAL_SECRET and value not in _literal_secrets:
        # Longest first, so that a secret containing another is removed whole.
        _literal_secrets = tuple(sorted({*_literal_secrets, value}, key=len, reverse=True))


# A quoted value ('..' / ".." / b'..' / JSON-escaped \"..\") or a bare token.
_VALUE = r"""
    (?:
        \\?b?(?P<vq>["'])(?:(?!\\?(?P=vq))[^\r\n])*\\?(?P=vq)
      | (?!\[REDACTED)(?P<bare>{scheme}[^\s,;&"'<>{{}}\[\]()]+)
    )
"""

# Authorization header values however they were rendered:
#   Authorization: Bearer x | 'Authorization': 'Basic x' | "authorization": "x"
#   authorization=Bearer x  | ('Authorization', 'x') | 'HTTP_AUTHORIZATION': 'x'
# A comma separator is only accepted after a quoted key (header tuples), so
# prose such as "authorization, then capture" is left alone.
_AUTH_RE = re.compile(
    r"""
    (?P<key>
        (?: \\?b?(?P<kq>["'])(?:http_|proxy-)?authorization\\?(?P=kq)
          | (?<![A-Za-z0-9])(?:http_|proxy-)?authorization\\?["']? )
        \s*(?:[:=]|(?(kq),|(?!)))\s*
    )
    """
    + _VALUE.format(scheme=r"(?:(?:bearer|basic|token|digest|negotiate|hmac|apikey)\s+)?"),
    re.IGNORECASE | re.VERBOSE,
)

# cvc/cvv fields: cvc=123, "cvc": "123", 'cvv': 1234, card[cvc]=123,
# card%5Bcvc%5D=123 (stripe's form encoding), cvc: 123. Not matched:
# "cvc_check" (a Stripe result field) and "param": "cvc", "code": ... (no
# comma separator here, unlike Authorization header tuples).
_CVC_RE = re.compile(
    r"""
    (?P<key>
        (?: \\?b?(?P<kq>["'])
          | (?<![A-Za-z0-9]) | (?<=%5B) )
        (?:cvc|cvv)2?(?![A-Za-z0-9_])
        (?:\]|%5D)?
        (?(kq)\\?(?P=kq)|\\?["']?)
        \s*[:=]\s*
    )
    """
    + _VALUE.format(scheme=""),
    re.IGNORECASE | re.VERBOSE,
)


def _keep_key_redact_value(match: re.Match, mask: bool = False) -> str:
    quote = match.group("vq")
    raw = match.group(0)[len(match.group("key")) :]
    if quote is not None:
        # keep the quoting style so JSON-ish/repr-ish text stays readable
        opener = raw[: raw.index(quote) + 1]
        closer = "\\" + quote if raw.endswith("\\" + quote) else quote
        hidden = _MASK * (len(raw) - len(opener) - len(closer)) if mask else REDACTED
        return match.group("key") + opener + hidden + closer
    return match.group("key") + (_MASK * len(raw) if mask else REDACTED)


def _stripe_key_sub(match: re.Match) -> str:
    return (match.group(1) or match.group(2)) + REDACTED


def _keep_prefix_mask_rest(match: re.Match) -> str:
    kept = match.group(1) or match.group(2) or ""
    return kept + _MASK * (len(match.group(0)) - len(kept))


def redact(text: str) -> str:
    """Return ``text`` with secrets, card numbers and CVCs replaced.

    Idempotent: redacting already-redacted text changes nothing.
    """
    if not isinstance(text, str):
        text = str(text)
    # One replacement can expose another match (in "4242...4242rk_test_x" the
    # key only starts a word once the card is gone), so repeat until stable;
    # ordinary lines take a single pass.
    for _ in range(4):
        cleaned = _redact_once(text)
        if cleaned == text:
            break
        text = cleaned
    if "%" in text or "+" in text:
        text = _redact_url_encoded(text)
    return text


def _redact_once(text: str) -> str:
    if not text:
        return text
    # Fast path: substring tests (much cheaper than the regexes) decide which
    # substitutions can apply at all; most lines need none of them.
    if "sk_" in text or "rk_" in text:
        text = _STRIPE_KEY_RE.sub(_stripe_key_sub, text)
    if "whsec_" in text:
        text = _WHSEC_RE.sub("whsec_" + REDACTED, text)
    if "kmy_" in text:
        text = _KMY_KEY_RE.sub(r"\1" + REDACTED, text)
    for secret in _literal_secrets:
        if secret in text:
            text = text.replace(secret, REDACTED)
    lowered = text.lower()
    if "authorization" in lowered:
        text = _AUTH_RE.sub(_keep_key_redact_value, text)
    if "bearer" in lowered:
        text = _BEARER_RE.sub(lambda m: m.group(1) + " " + REDACTED, text)
    if "cvc" in lowered or "cvv" in lowered:
        text = _CVC_RE.sub(_keep_key_redact_value, text)
    return redact_card_numbers(text, REDACTED_CARD)


# URL-encoded text (a request line or Referer in gunicorn's access log, a URL in stripe's
# request log): "%22" before a key or "+" between a card's groups hides what the patterns look
# for. Such text is decoded (each %XX to one character, "+" to a space, so that every decoded
# character comes from one known stretch of the original), the decoded view is masked with the
# same patterns, character for character, and each masked stretch is replaced in the original.
_MASK = "\ue000"
_MASK_CARD = "\ue001"
_ESCAPE_RE = re.compile(r"%[0-9A-Fa-f]{2}|\+")
_DECODED = {f"%{i:02x}": chr(i) for i in range(256)} | {f"%{i:02X}": chr(i) for i in range(256)} | {"+": " "}
_MASKED_RE = re.compile(f"{_MASK}+|{_MASK_CARD}+")
# An escape between two digits: the only way decoding can join a card's groups (a timestamp's
# " +0000" does not qualify, which spares most access-log lines the card scan).
_ESCAPED_SEPARATOR_RE = re.compile(r"[0-9](?:\+|%[0-9A-Fa-f]{2})[0-9]")


def _mask_once(text: str, cards: bool) -> str:
    """`_redact_once` on the decoded view, with every removed character replaced by a mask
    character instead of a marker: the result has the length of `text`."""
    if "sk_" in text or "rk_" in text:
        text = _STRIPE_KEY_RE.sub(_keep_prefix_mask_rest, text)
    if "whsec_" in text:
        text = _WHSEC_RE.sub(lambda m: "whsec_" + _MASK * (len(m.group(0)) - 6), text)
    if "kmy_" in text:
        text = _KMY_KEY_RE.sub(_keep_prefix_mask_rest, text)
    for secret in _literal_secrets:
        if secret in text:
            text = text.replace(secret, _MASK * len(secret))
    lowered = text.lower()
    if "authorization" in lowered:
        text = _AUTH_RE.sub(lambda m: _keep_key_redact_value(m, mask=True), text)
    if "bearer" in lowered:
        text = _BEARER_RE.sub(_keep_prefix_mask_rest, text)
    if "cvc" in lowered or "cvv" in lowered:
        text = _CVC_RE.sub(lambda m: _keep_key_redact_value(m, mask=True), text)
    return mask_card_numbers(text, _MASK_CARD) if cards else text


def _decoded_starts(text: str) -> list[int]:
    """For each character of `text` decoded, where it begins in `text`; then len(text)."""
    starts: list[int] = []
    position = 0
    for escape in _ESCAPE_RE.finditer(text):
        starts.extend(range(position, escape.start()))
        starts.append(escape.start())
        position = escape.end()
    starts.extend(range(position, len(text) + 1))
    return starts


def _masked_spans(decoded: str, cards: bool) -> list[tuple[int, int, str]]:
    masked = decoded
    for _ in range(4):
        again = _mask_once(masked, cards)
        if again == masked:
            break
        masked = again
    if masked == decoded:
        return []
    return [
        (run.start(), run.end(), REDACTED_CARD if run.group(0)[0] == _MASK_CARD else REDACTED)
        for run in _MASKED_RE.finditer(masked)
        if decoded[run.start() : run.end()] != run.group(0)  # not mask characters the text itself held
    ]


def _redact_url_encoded(text: str) -> str:
    cards = _ESCAPED_SEPARATOR_RE.search(text) is not None
    if "%" not in text and not cards:
        # "+" already ends a word for the key patterns; as a space it matters only to cards,
        # Authorization values and CVCs.
        lowered = text.lower()
        if "authorization" not in lowered and "cvc" not in lowered and "cvv" not in lowered:
            return text
    spans: list[tuple[int, int, str]] = []  # in `text`: [start, end), marker
    levels = [text]  # the text, then the text decoded once
    # Two levels: a URL inside a query parameter (a redirect target, a Referer) is encoded twice.
    for depth in range(2):
        current = levels[-1]
        decoded = _ESCAPE_RE.sub(lambda m: _DECODED[m.group(0)], current)
        if decoded == current:
            break
        if depth:
            cards = cards or _ESCAPED_SEPARATOR_RE.search(current) is not None
        found = _masked_spans(decoded, cards)
        if found:
            starts = _decoded_starts(current)
            for outer in reversed(levels[:-1]):
                outer_starts = _decoded_starts(outer)
                starts = [outer_starts[i] for i in starts]
            spans.extend((starts[begin], starts[end], marker) for begin, end, marker in found)
        if "%" not in decoded:
            break
        levels.append(decoded)
    if not spans:
        return text
    out: list[str] = []
    done = 0
    for begin, end, marker in sorted(spans):
        if end <= done:
            continue
        if begin >= done:
            out.append(text[done:begin])
            out.append(marker)
        done = end
    out.append(text[done:])
    return "".join(out)


# --------------------------------------------------------------------------
# Structured values (extra=..., dict messages)
# --------------------------------------------------------------------------

# Keys whose value is secret whatever it looks like (e.g. a headers dict
# {"Authorization": "Bearer x"} where the value alone has no marker).
_SENSITIVE_KEY_RE = re.compile(
    r"(?:http_|proxy-)?authorization|(?:.*[\[_.-])?(?:cvc|cvv)2?\]?",
    re.IGNORECASE,
)
_PASSTHROUGH_TYPES = (
    bool,
    float,
    type(None),
    _dt.date,
    _dt.time,
    _dt.timedelta,
    enum.Enum,
    uuid.UUID,
    decimal.Decimal,
)
_MAX_DEPTH = 8


def _redact_value(value: Any, key: Any = None, depth: int = 0) -> Any:
    if isinstance(key, str) and value is not None and _SENSITIVE_KEY_RE.fullmatch(key.strip()) is not None:
        return REDACTED
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, _PASSTHROUGH_TYPES):
        return value
    if isinstance(value, int):
        # json would print a card number stored as an int verbatim
        return REDACTED_CARD if is_card_digits(str(abs(value))) else value
    if depth < _MAX_DEPTH:
        # Copies, never in-place: the caller may still hold the object.
        if type(value) is dict:
            return {(redact(k) if isinstance(k, str) else k): _redact_value(v, k, depth + 1) for k, v in value.items()}
        if type(value) in (list, tuple, set, frozenset):
            return type(value)(_redact_value(v, None, depth + 1) for v in value)
    # Anything else would be serialised through str() by the JSON encoder:
    # replace it by its redacted text only if redaction changed something,
    # so ordinary objects keep their normal rendering.
    try:
        rendered = str(value)
    except Exception:  # noqa: BLE001 -- any object's __str__ may raise; logging must not
        return value
    cleaned = redact(rendered)
    if cleaned == rendered:
        return value
    if isinstance(value, BaseException):
        return f"{type(value).__name__}: {cleaned}"
    return cleaned


# Attributes every LogRecord has; anything else on a record came from
# extra={...} (or a filter) and is logged as a JSON field, so it is redacted.
_STANDARD_ATTRS = frozenset(vars(logging.LogRecord("x", logging.INFO, __file__, 0, "x", None, None))) | {
    "message",
    "asctime",
    "taskName",
}

_EXC_FORMATTER = logging.Formatter()


class RedactionFilter(logging.Filter):
    """Redact the message, extras, exception and stack text of a record.

    Put it on handlers, not loggers: handler filters also see records
    propagated from child loggers such as ``stripe``.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            self._redact_record(record)
        except Exception:  # noqa: BLE001 -- see below
            # Never break logging, and never let an unredacted message out.
            record.msg = "[log record withheld: redaction failed]"
            record.args = None
            record.exc_info = None
            record.exc_text = None
            record.stack_info = None
        return True

    @staticmethod
    def _redact_record(record: logging.LogRecord) -> None:
        if isinstance(record.msg, dict) and not record.args:
            # python-json-logger merges a dict message into the JSON object
            record.msg = _redact_value(record.msg)
        else:
            # Render once so secrets passed as %-args are caught too.
            try:
                rendered = record.getMessage()
            except Exception:  # noqa: BLE001 -- a bad format string or argument; see below
                # logging.Handler.handleError would print msg and args
                # verbatim to stderr; render them ourselves instead.
                rendered = f"{record.msg!r} (unformattable args: {record.args!r})"
            record.msg = redact(rendered)
            record.args = None
            if "message" in vars(record):
                record.message = record.msg

        for key, value in list(vars(record).items()):
            if key in _STANDARD_ATTRS:
                continue
            cleaned = _redact_value(value, key)
            if cleaned is not value:
                setattr(record, key, cleaned)

        if record.exc_info:
            if record.exc_info[0] is not None and not record.exc_text:
                record.exc_text = _EXC_FORMATTER.formatException(record.exc_info)
            # Formatters would re-render the traceback from exc_info
            # unredacted; exc_text (redacted below) is what gets logged.
            record.exc_info = None
        if record.exc_text:
            record.exc_text = redact(record.exc_text)
        if record.stack_info:
            record.stack_info = redact(record.stack_info)


# Set while one request's thread works for another request (the webhook group
# commit handles its followers' events): their log lines carry *their* id.
_ON_BEHALF_OF: ContextVar[str | None] = ContextVar("kamiyo_log_on_behalf_of", default=None)


@contextlib.contextmanager
def on_behalf_of(request_id: str | None) -> Iterator[None]:
    """Log lines written meanwhile carry `request_id` (an already sanitised id)."""
    token = _ON_BEHALF_OF.set(request_id)
    try:
        yield
    finally:
        _ON_BEHALF_OF.reset(token)


class RequestContextFilter(logging.Filter):
    """Attach the current request's correlation id as ``record.request_id``.

    The id in ``g.request_id`` was sanitised when the request started; we
    only read it, so raw client-supplied ids never reach the log.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        request_id = _ON_BEHALF_OF.get()
        if request_id is None and has_request_context():
            try:
                request_id = g.get("request_id")
            except RuntimeError:  # request context without app context
                request_id = None
        if request_id:
            record.request_id = request_id
        elif not hasattr(record, "request_id"):
            record.request_id = None
        return True


class _KamiyoJsonFormatter(JsonFormatter):
    """Fixed field order, ISO-8601 UTC timestamp, no null request_id."""

    def process_log_record(self, log_data: dict[str, Any]) -> dict[str, Any]:
        ordered: dict[str, Any] = {}
        ts = log_data.pop("timestamp", None)
        if isinstance(ts, _dt.datetime):
            ordered["timestamp"] = ts.astimezone(_dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
        elif ts is not None:
            ordered["timestamp"] = ts
        for field in ("level", "logger", "message"):
            if field in log_data:
                ordered[field] = log_data.pop(field)
        request_id = log_data.pop("request_id", None)
        if request_id is not None:
            ordered["request_id"] = request_id
        ordered.update(log_data)
        return ordered


def _make_formatter() -> logging.Formatter:
    return _KamiyoJsonFormatter(
        "{levelname}{name}{process}{message}",
        style="{",
        rename_fields={"levelname": "level", "name": "logger"},
        timestamp=True,
    )


def _coerce_level(level: str | int) -> int:
    if isinstance(level, int):
        return level
    name = str(level).strip().upper()
    if name.isdigit():
        return int(name)
    mapping = logging.getLevelNamesMapping()
    if name not in mapping:
        raise ValueError(f"unknown log level: {level!r}")
    return mapping[name]


HANDLER_NAME = "kamiyo"
HELD_BACK = 200  # a one-off command's quiet lines kept for --verbose (start-up makes a few)


class OneOffFilter(logging.Filter):
    """A one-off command's log: warnings and errors only, unless it asks for more.

    What it holds back is kept (the newest HELD_BACK lines), so that `--verbose`, parsed
    only after the app (and its start-up lines) exists, still shows the whole log, in order.
    """

    def __init__(self, threshold: int, configured: int) -> None:
        super().__init__()
        self.threshold = threshold
        self.configured = configured
        self._held: collections.deque[logging.LogRecord] = collections.deque(maxlen=HELD_BACK)

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno >= self.threshold:
            return True
        self._held.append(record)
        return False

    def lower_to(self, threshold: int, handler: logging.Handler) -> None:
        """Show from `threshold` on, beginning with the lines held back so far."""
        self.threshold = min(self.threshold, threshold)
        held, self._held = list(self._held), collections.deque(maxlen=HELD_BACK)
        for record in held:
            if record.levelno >= self.threshold:
                handler.handle(record)


def one_off_command() -> bool:
    """Whether this process runs a one-off `flask` command: not a server (gunicorn, `flask
    run`), nor tests or `python -c`, which create the app outside any click command."""
    ctx = click.get_current_context(silent=True)
    if ctx is None:
        return False
    from flask.cli import run_command

    return ctx.command is not run_command


def _json_handler(stream: TextIO | None = None) -> logging.Handler:
    handler = logging.StreamHandler(sys.stderr if stream is None else stream)
    handler.setFormatter(_make_formatter())
    # Filters on the handler, not on loggers: logger filters do not run for
    # records propagated from child loggers (stripe, werkzeug, sqlalchemy).
    # Context first, so the id is present; redaction last, just before output.
    handler.addFilter(RequestContextFilter())
    handler.addFilter(RedactionFilter())
    return handler


def gunicorn_handler(root: bool = False) -> logging.Handler:
    """The same JSON lines and redaction for gunicorn's own loggers (gunicorn.error,
    gunicorn.access), named in gunicorn.conf.py's logconfig_dict: gunicorn logs what a client
    sent (an invalid header name, a request line) before the app sees the request.

    `root`: the root logger's, which configure_logging() replaces in each worker (else every
    line a worker logs would be written twice).
    """
    handler = _json_handler()
    if root:
        handler._kamiyo = True  # type: ignore[attr-defined]
    return handler


def configure_logging(
    level: str | int = "INFO", stream: TextIO | None = None, *, one_off: bool = False
) -> logging.Handler:
    """Install the Kamiyo JSON handler on the root logger and return it.

    `one_off`: a one-off command's log, which shows warnings and errors only until
    log_verbosely() or log_as_service() is called.

    Idempotent: a previously installed Kamiyo handler is replaced (tests and
    app factories call this many times).
    """
    numeric_level = _coerce_level(level)
    configured = numeric_level
    if one_off:
        # Records down to INFO are made, so that --verbose can still show them.
        numeric_level = min(numeric_level, logging.INFO)
    root = logging.getLogger()

    handler = _json_handler(stream)
    handler.set_name(HANDLER_NAME)
    handler._kamiyo = True  # type: ignore[attr-defined]  # marker for replacement
    if one_off:
        # First: a line held back is redacted when (and if) it is shown.
        handler.filters.insert(0, OneOffFilter(max(configured, logging.WARNING), configured))

    for old in list(root.handlers):
        if getattr(old, "_kamiyo", False):
            root.removeHandler(old)
            old.close()  # does not close the stream, which we do not own
    root.addHandler(handler)
    root.setLevel(numeric_level)

    # stripe-python logs whole request bodies at DEBUG: never go below INFO.
    # (stripe.log / STRIPE_LOG="debug" additionally prints to stderr directly,
    # bypassing logging entirely -- keep those unset.)
    logging.getLogger("stripe").setLevel(max(numeric_level, logging.INFO))
    return handler


def _one_off() -> tuple[logging.Handler, OneOffFilter] | None:
    for handler in logging.getLogger().handlers:
        if getattr(handler, "_kamiyo", False):
            for found in handler.filters:
                if isinstance(found, OneOffFilter):
                    return handler, found
    return None


def log_verbosely() -> None:
    """A one-off command's --verbose: its whole log from the start, down to INFO (or to
    LOG_LEVEL, when that is lower)."""
    if (found := _one_off()) is not None:
        handler, quiet = found
        quiet.lower_to(min(quiet.configured, logging.INFO), handler)


def log_as_service() -> None:
    """A command that runs as a service (`flask scheduler run`): its log at LOG_LEVEL, the
    start-up lines included, as a server logs."""
    if (found := _one_off()) is not None:
        handler, quiet = found
        quiet.lower_to(quiet.configured, handler)
        # No record below what is shown is made to be held (--verbose may have shown more).
        logging.getLogger().setLevel(quiet.threshold)


def redact_structure(value: Any) -> Any:
    """A redacted copy of a decoded JSON value (a webhook payload shown on the dashboard, say)."""
    return _redact_value(value)
