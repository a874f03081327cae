"""The console's two defences: the token that guards every action, and the headers on every response.

The token is compared with :func:`hmac.compare_digest` so its length and content cannot be learned
from response times. Headers are added by a small ASGI middleware rather than per view, so error
pages and static files get them too; a response that sets its own policy (an evaluation report,
which carries inline styles and images) keeps it.
"""

from __future__ import annotations

import hmac
from collections.abc import Mapping
from enum import Enum

from pydantic import SecretStr
from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

PAGE_POLICY = "default-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
# An evaluation report is one self-contained file: inline CSS and data: images, never a script.
REPORT_POLICY = ("default-src 'none'; style-src 'unsafe-inline'; img-src data:; frame-ancestors 'none'; "
                 "base-uri 'none'; form-action 'none'")


class TokenCheck(Enum):
    """What the token presented with an action came to."""

    ACCEPTED = "accepted"
    MISSING = "missing"
    WRONG = "wrong"
    DISABLED = "disabled"  # no token is configured: the console is read-only

    @property
    def status_code(self) -> int:
        """401 asks for credentials; 403 refuses the ones given (or any, when actions are off)."""
        return {"accepted": 200, "missing": 401}.get(self.value, 403)


def presented_token(headers: Mapping[str, str], form: Mapping[str, str]) -> str:
    """The token from ``Authorization: Bearer ...``, else from the form's ``token`` field."""
    scheme, _, value = headers.get("authorization", "").partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        return value.strip()
    return form.get("token", "")


def check_token(configured: SecretStr, presented: str) -> TokenCheck:
    """Constant-time comparison of the presented token with the configured one."""
    expected = configured.get_secret_value()
    if not expected:
        return TokenCheck.DISABLED
    if not presented:
        return TokenCheck.MISSING
    if hmac.compare_digest(presented.encode("utf-8"), expected.encode("utf-8")):
        return TokenCheck.ACCEPTED
    return TokenCheck.WRONG


class SecurityHeaders:
    """Adds CSP, frame denial, no-sniff, no referrer, and ``no-store`` outside ``/static``."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        cacheable = str(scope.get("path", "")).startswith("/static/")

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                headers.setdefault("Content-Security-Policy", PAGE_POLICY)
                headers.setdefault("X-Frame-Options", "DENY")
                headers.setdefault("X-Content-Type-Options", "nosniff")
                headers.setdefault("Referrer-Policy", "no-referrer")
                headers.setdefault("Cache-Control", "max-age=300" if cacheable else "no-store")
            await send(message)

        await self.app(scope, receive, send_with_headers)
