"""Who may call: the bearer token (``--http-token``) and webhook signatures (``--hook-secret``).

Both comparisons run in constant time (:func:`hmac.compare_digest`), so response timing tells an
attacker nothing about how much of a guess was right. The token is accepted in the
``Authorization: Bearer`` header, or as the ``access_token`` query parameter (RFC 6750, 2.3) for
what cannot set headers: a browser opening the dashboard, ``EventSource``, a webhook sender
configured with a URL only.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
from typing import Final

from starlette.requests import HTTPConnection

__all__ = ["SIGNATURE_HEADER", "credentials_ok", "is_loopback", "signature_ok", "token_ok"]

SIGNATURE_HEADER: Final = "x-stepline-signature"


def token_ok(conn: HTTPConnection, token: str) -> bool:
    """Whether the request carries ``token`` (header or ``access_token`` query parameter)."""
    return credentials_ok(
        conn.headers.get("authorization", ""), conn.query_params.get("access_token", ""), token
    )


def credentials_ok(authorization: str, access_token: str, token: str) -> bool:
    """:func:`token_ok` from the ``Authorization`` header's value and the query parameter's."""
    scheme, _, given = authorization.partition(" ")
    if scheme.lower() != "bearer":
        given = access_token
    return hmac.compare_digest(given.strip().encode(), token.encode())


def signature_ok(body: bytes, header: str | None, secret: str) -> bool:
    """``X-Stepline-Signature: sha256=HEX`` is the HMAC-SHA256 of ``body`` under ``secret``
    (the scheme GitHub's webhooks use, so their senders work unchanged)."""
    if header is None or not header.startswith("sha256="):
        return False
    expected = hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    return hmac.compare_digest(header[len("sha256=") :].strip().lower().encode(), expected.encode())


def is_loopback(host: str) -> bool:
    """Whether ``host`` can be reached only from this machine (the bind that needs no token)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
