"""HTTP Basic authentication of the live view, compared in constant time."""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac

__all__ = ["BasicAuth"]


class BasicAuth:
    """Checks an ``Authorization`` header against one user name and password.

    Both sides are hashed first, so that the comparison takes the same time whatever the lengths
    and wherever the first difference is (``hmac.compare_digest`` on equal-length digests).
    """

    def __init__(self, username: str, password: str, realm: str = "streamdet") -> None:
        self._expected = hashlib.sha256(f"{username}:{password}".encode()).digest()
        self.challenge = f'Basic realm="{realm}", charset="UTF-8"'

    def check(self, header: str | None) -> bool:
        """True if ``header`` (the Authorization header's value, or None) holds the credentials."""
        given = b""
        if header:
            scheme, _, value = header.strip().partition(" ")
            if scheme.lower() == "basic":
                try:
                    given = base64.b64decode(value.strip(), validate=True)
                except (binascii.Error, ValueError):
                    given = b""
        ok = hmac.compare_digest(hashlib.sha256(given).digest(), self._expected)
        return ok and bool(given)
