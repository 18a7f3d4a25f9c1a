"""Hiding credentials in camera URLs and in any text that quotes them (FFmpeg errors).

Camera URLs carry passwords; logs, error messages, stats and metrics only ever show the result
of :func:`redact_url` or :func:`redact_text`.
"""

from __future__ import annotations

import re

_SCHEME_RE = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*):")
_SECRET_QUERY_KEYS = re.compile(
    r"^(pass(word|wd)?|pwd|passphrase|token|access_token|auth|key|apikey|api_key|secret|sig|"
    r"signature|user(name)?|usr|login)$",
    re.IGNORECASE,
)
_USERINFO = re.compile(r"(?P<scheme>\b[a-zA-Z][a-zA-Z0-9+.-]*://)[^/\s'\"]*@")
_SECRET_PARAM = re.compile(r"(?P<key>[?&][^=&\s'\"]*(?:pass|pwd|secret|token|key|auth|sig|cred)[^=&\s'\"]*=)"
                           r"[^&\s'\"]*", re.IGNORECASE)


def redact_url(url: str) -> str:
    """Return ``url`` with the userinfo (``user:password@``) and credential query values as ``***``.

    ``rtsp://admin:pw@10.0.0.5/s1`` becomes ``rtsp://***:***@10.0.0.5/s1``. Malformed strings
    are handled conservatively: when in doubt, more is hidden, never less. Local paths without
    a scheme are returned unchanged.
    """
    if not isinstance(url, str):
        return "***"
    slashes = url.find("//")
    scheme = _SCHEME_RE.match(url)
    if slashes >= 0:
        head, rest = url[: slashes + 2], url[slashes + 2 :]
    elif scheme:
        head, rest = url[: scheme.end()], url[scheme.end() :]
    else:
        return url
    end = min((i for i in (rest.find(c) for c in "/?#") if i >= 0), default=len(rest))
    at = rest.rfind("@")
    userinfo_end = -1
    if 0 <= at < end:
        userinfo_end = at
    elif at >= 0 and 0 <= rest.find(":") < end:
        # 'user:pa/ss@host': an unencoded '/', '?' or '#' in the password; hide up to the last '@'
        userinfo_end = at
    if userinfo_end >= 0:
        userinfo = rest[:userinfo_end]
        rest = ("***:***" if ":" in userinfo else "***") + rest[userinfo_end:]
    return head + _redact_query(rest)


def _redact_query(rest: str) -> str:
    """Hide the values of query parameters that usually carry credentials (``?password=...``)."""
    q = rest.find("?")
    if q < 0:
        return rest
    frag = rest.find("#", q)
    query = rest[q + 1 : frag if frag >= 0 else len(rest)]
    parts = []
    for part in query.split("&"):
        key, eq, _value = part.partition("=")
        parts.append(f"{key}=***" if eq and _SECRET_QUERY_KEYS.match(key) else part)
    return rest[: q + 1] + "&".join(parts) + (rest[frag:] if frag >= 0 else "")


def redact_text(text: str) -> str:
    """Mask credentials in any URL quoted inside ``text`` (e.g. an FFmpeg error message)."""
    text = _USERINFO.sub(r"\g<scheme>***@", text)
    return _SECRET_PARAM.sub(r"\g<key>***", text)
