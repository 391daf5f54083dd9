"""Headers every answer carries: no sniffing, no framing, and for HTML a content security
policy that allows only our own files (no inline script, no CDN). JSON answers are never
stored by a browser or a shared cache: customer reads carry PII (names, emails), and the
rest (ops numbers, errors with support ids) has no reason to be kept either.

HSTS is the TLS proxy's to send (see the README's Security section): this service speaks
plain HTTP on loopback behind it.
"""

from __future__ import annotations

from flask import Flask, Response

CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)


def _add_headers(response: Response) -> Response:
    response.headers.setdefault("X-Content-Type-Options", "nosniff")
    response.headers.setdefault("X-Frame-Options", "DENY")
    response.headers.setdefault("Referrer-Policy", "same-origin")
    if response.is_json:  # application/json and application/*+json
        response.headers.setdefault("Cache-Control", "no-store")
    if response.mimetype == "text/html":
        response.headers.setdefault("Content-Security-Policy", CONTENT_SECURITY_POLICY)
    return response


def init_app(app: Flask) -> None:
    app.after_request(_add_headers)
