"""HTTP Basic checking of the live view."""

from __future__ import annotations

import base64

import pytest

from streamdet.web.auth import BasicAuth


def header(raw: bytes, scheme: str = "Basic") -> str:
    return f"{scheme} {base64.b64encode(raw).decode()}"


def test_right_credentials_pass() -> None:
    auth = BasicAuth("alice", "s3cret:with colon")
    assert auth.check(header(b"alice:s3cret:with colon"))
    assert auth.check("basic " + base64.b64encode(b"alice:s3cret:with colon").decode())  # scheme case-insensitive


@pytest.mark.parametrize("value", [
    None, "", "Basic", "Basic !!!notbase64", header(b"alice:wrong"), header(b"bob:s3cret"), header(b"alice"),
    header(b"alice:s3cret", scheme="Bearer"), header(b"alice:s3cret "), header(b""),
])
def test_anything_else_fails(value: str | None) -> None:
    assert not BasicAuth("alice", "s3cret").check(value)


def test_challenge_names_the_realm() -> None:
    assert BasicAuth("a", "b").challenge.startswith('Basic realm="streamdet"')
