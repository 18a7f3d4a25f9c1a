"""CurveZMQ certificates on the subscriber side: find them (also in systemd credentials) and read them.

Certificate files are in pyzmq's ``zmq.auth`` format: ``NAME.key`` holds a public key,
``NAME.key_secret`` the public and the secret key. A path that does not exist as given is looked up
by its file name in ``$CREDENTIALS_DIRECTORY`` (systemd ``LoadCredential=``). Errors name the path,
never a key; secret keys never reach a log line, a message or a ``repr``. The daemon's side
(key generation, the server's keys and its admitted clients) is ``streamdet.transport.keys``, which builds on
this module. Imports only pyzmq and the standard library.
"""

from __future__ import annotations

import logging
import os
import stat
from collections.abc import Mapping
from pathlib import Path

from streamdet_client.errors import KeyFileError
from streamdet_client.transport import CurveClientKeys

__all__ = ["CREDENTIALS_ENV", "PUBLIC_SUFFIX", "SECRET_SUFFIX", "KeyFileError", "credentials_dir", "exposed_mode",
           "load_client_keys", "locate_file", "read_certificate", "read_secret"]

log = logging.getLogger("streamdet.transport.keys")

PUBLIC_SUFFIX = ".key"
SECRET_SUFFIX = ".key_secret"
CREDENTIALS_ENV = "CREDENTIALS_DIRECTORY"
_Z85_ALPHABET = frozenset(b"0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ.-:+=^!/*?&<>()[]{}@%$#")
_KEY_LEN = 40  # a 32-byte CURVE key in Z85


def credentials_dir(env: Mapping[str, str] | None) -> Path | None:
    """``$CREDENTIALS_DIRECTORY`` (systemd's folder of loaded credentials), or None when unset."""
    value = (os.environ if env is None else env).get(CREDENTIALS_ENV)
    return Path(value) if value else None


def locate_file(path: str | os.PathLike[str], what: str, env: Mapping[str, str] | None = None) -> Path:
    """``path`` if it exists, else ``$CREDENTIALS_DIRECTORY/<file name>`` if that exists.

    Raises KeyFileError naming ``what``, the path and where else it was looked for.
    """
    given = Path(path)
    if given.exists():
        return given
    creds = credentials_dir(env)
    if creds is not None:
        candidate = creds / given.name
        if candidate.exists():
            return candidate
        raise KeyFileError(f"{what} {given}: no such file (nor {candidate} in ${CREDENTIALS_ENV})")
    raise KeyFileError(f"{what} {given}: no such file")


def _valid_key(value: bytes | None) -> bool:
    return value is not None and len(value) == _KEY_LEN and set(value) <= _Z85_ALPHABET


def read_certificate(path: Path, what: str, *, secret: bool) -> tuple[bytes, bytes | None]:
    """(public key, secret key or None) of a certificate file, both Z85; errors name the file only."""
    from zmq.auth import load_certificate

    if path.is_dir():
        raise KeyFileError(f"{what} {path}: is a directory, expected a certificate file")
    try:
        public, secret_key = load_certificate(path)
    except PermissionError:
        raise KeyFileError(f"{what} {path}: permission denied") from None
    except OSError as exc:
        raise KeyFileError(f"{what} {path}: cannot read it: {exc.strerror or exc}") from None
    except ValueError:
        raise KeyFileError(f"{what} {path}: not a ZeroMQ certificate (no public-key line)") from None
    if not _valid_key(public):
        raise KeyFileError(f"{what} {path}: the public key is not a 40-character Z85 key")
    if secret:
        if secret_key is None:
            raise KeyFileError(f"{what} {path}: has no secret key (the .key_secret file is needed, not the .key)")
        if not _valid_key(secret_key):
            raise KeyFileError(f"{what} {path}: the secret key is not a 40-character Z85 key")
    return public, secret_key


def exposed_mode(path: Path) -> str | None:
    """A problem line if a secret file is readable or writable by group or others, else None."""
    try:
        mode = path.stat().st_mode
    except OSError:
        return None
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        return f"{path} is accessible to other users (mode {stat.S_IMODE(mode):04o}); chmod 600 it"
    return None


def read_secret(path: str | os.PathLike[str], what: str, env: Mapping[str, str] | None) -> tuple[bytes, bytes]:
    """(public, secret) of a secret certificate found by :func:`locate_file`; warns if others may read it."""
    found = locate_file(path, what, env)
    public, secret = read_certificate(found, what, secret=True)
    warning = exposed_mode(found)
    if warning:
        log.warning("%s: %s", what, warning)
    assert secret is not None
    return public, secret


def load_client_keys(
    server_key: str | os.PathLike[str],
    client_key: str | os.PathLike[str],
    env: Mapping[str, str] | None = None,
) -> CurveClientKeys:
    """A subscriber's keys: the server's public key (its ``.key``; a ``.key_secret`` works too)
    and the client's own pair (its ``.key_secret``)."""
    server_public, _ = read_certificate(locate_file(server_key, "server key", env), "server key", secret=False)
    public, secret = read_secret(client_key, "client key", env)
    return CurveClientKeys(server_key=server_public, public_key=public, secret_key=secret)
