"""CurveZMQ keys: create key pairs, load certificates (also from systemd credentials), check them.

Consumes certificate files in pyzmq's ``zmq.auth`` format: ``NAME.key`` holds a public key,
``NAME.key_secret`` the public and the secret key. Produces the key sets of
``streamdet.transport.sockets`` (``CurveServerKeys`` for the daemon's public socket, ``CurveClientKeys``
for a subscriber). Used by ``streamdet keygen``, the supervisor, ``streamdet check`` and clients,
so it imports only pyzmq and the standard library.

A configured path that does not exist as given is looked up by its file name in
``$CREDENTIALS_DIRECTORY`` (systemd ``LoadCredential=``); a directory of client keys loaded with
``LoadCredential=clients:/etc/streamdet/clients`` appears there as ``clients_<file>``. A secret
key file among the client keys is refused (``authorized_keys`` holds public keys only). Errors name
the path, never a key; secret keys never reach a log line, a message or a ``repr``.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import sys
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TextIO

from streamdet.transport.sockets import CurveServerKeys
from streamdet_client.keys import (
    CREDENTIALS_ENV,
    PUBLIC_SUFFIX,
    SECRET_SUFFIX,
    KeyFileError,
    credentials_dir,
    exposed_mode,
    load_client_keys,
    locate_file,
    read_certificate,
    read_secret,
)

# the subscriber's half lives in the light client (streamdet_client.keys); re-exported here
__all__ = ["CREDENTIALS_ENV", "PUBLIC_SUFFIX", "SECRET_SUFFIX", "KeyFileError", "authorized_files", "check_curve",
           "exposed_mode", "holds_secret_key", "keygen", "keygen_main", "load_authorized_keys", "load_client_keys",
           "load_server_keys", "locate_file", "locate_public_keys", "read_certificate", "secret_in_authorized",
           "server_keys_from_config"]

log = logging.getLogger(__name__)

_SECRET_ENTRY = re.compile(rb"^[ \t]*secret-key[ \t]*=", re.MULTILINE)  # zmq.auth's certificate syntax
_SNIFF_BYTES = 64 * 1024  # a certificate is a few hundred bytes; never read a stray big file whole


# -- keygen -------------------------------------------------------------------------------------
def keygen(
    directory: str | os.PathLike[str],
    name: str,
    *,
    force: bool = False,
    public_dir: str | os.PathLike[str] | None = None,
) -> tuple[Path, Path]:
    """Write ``DIR/NAME.key`` (public) and ``DIR/NAME.key_secret`` (mode 0600); returns both paths.

    ``public_dir`` writes the public ``NAME.key`` there instead (e.g. straight into a server's
    ``authorized_keys`` folder), so that folder never receives the secret file. Folders are
    created if needed. Existing files are refused unless ``force``. Each file is written in a
    private temporary directory beside its target first and then moved into place, so the secret
    file is never readable by others, not even for a moment.
    """
    if not name or name in (".", "..") or "/" in name or "\0" in name:
        raise KeyFileError(f"invalid key name {name!r}: use a plain file name such as 'server' or 'alice'")
    folder = Path(directory)
    public_folder = folder if public_dir is None else Path(public_dir)
    for path in (folder, public_folder):
        try:
            path.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise KeyFileError(f"cannot create {path}: {exc.strerror}") from exc
    targets = (public_folder / f"{name}{PUBLIC_SUFFIX}", folder / f"{name}{SECRET_SUFFIX}")
    existing = [str(t) for t in targets if t.exists() or t.is_symlink()]
    if existing and not force:
        raise KeyFileError(f"refusing to overwrite {' and '.join(existing)} (use --force to replace)")
    from zmq.auth import create_certificates

    scratches: list[Path] = []
    placed: list[Path] = []
    try:
        scratches.append(Path(tempfile.mkdtemp(prefix=".keygen-", dir=folder)))  # mode 0700
        public, secret = (Path(p) for p in create_certificates(scratches[0], name))
        public.chmod(0o644)
        secret.chmod(0o600)
        if public_folder.resolve() != folder.resolve():  # stage it beside its target: a link cannot cross devices
            scratches.append(Path(tempfile.mkdtemp(prefix=".keygen-", dir=public_folder)))
            public = Path(shutil.copy2(public, scratches[1] / public.name))
        for source, target in zip((public, secret), targets, strict=True):
            if force:
                os.replace(source, target)
            else:
                os.link(source, target)  # fails if the name appeared meanwhile: never clobbers
            placed.append(target)
    except FileExistsError as exc:
        for path in placed:
            path.unlink(missing_ok=True)
        raise KeyFileError(f"refusing to overwrite {exc.filename} (use --force to replace)") from None
    except OSError as exc:
        for path in placed:
            path.unlink(missing_ok=True)
        where = folder if public_folder == folder else f"{folder} and {public_folder}"
        raise KeyFileError(f"cannot write keys into {where}: {exc.strerror}") from exc
    finally:
        for scratch in scratches:
            shutil.rmtree(scratch, ignore_errors=True)
    return targets


def keygen_main(
    directory: str, name: str, force: bool = False, out: TextIO | None = None, public_dir: str | None = None
) -> int:
    """``streamdet keygen DIR NAME [--public-dir PUBDIR]``: create the pair, print where it is (never the secret)."""
    public, secret = keygen(directory, name, force=force, public_dir=public_dir)
    stream = sys.stdout if out is None else out
    stream.write(
        f"public key:  {public}\n"
        f"secret key:  {secret}  (mode 0600: keep it private)\n"
        "A server's .key goes to its clients (streamdet subscribe --server-key). A client's .key, never its\n"
        ".key_secret, goes into the server's publish.curve.authorized_keys folder; the .key_secret stays with\n"
        "the client (streamdet subscribe --client-key).\n"
    )
    return 0


# -- locating files -----------------------------------------------------------------------------
def authorized_files(directory: str | os.PathLike[str], env: Mapping[str, str] | None = None) -> list[Path]:
    """Every file of a directory of client certificates (not only ``*.key``), sorted.

    When the directory does not exist and ``$CREDENTIALS_DIRECTORY`` is set, the files
    ``<directory name>_*`` there (systemd's names for a directory loaded as one credential).
    """
    given = Path(directory)
    if given.is_dir():
        return sorted(p for p in given.iterdir() if p.is_file())
    if given.exists():
        raise KeyFileError(f"authorized_keys {given}: not a directory")
    creds = credentials_dir(env)
    prefix = given.name.rstrip("/")
    if creds is not None and creds.is_dir():
        found = sorted(p for p in creds.glob(f"{prefix}_*") if p.is_file())
        if found:
            return found
        raise KeyFileError(
            f"authorized_keys {given}: no such directory (nor {prefix}_*{PUBLIC_SUFFIX} in ${CREDENTIALS_ENV})"
        )
    raise KeyFileError(f"authorized_keys {given}: no such directory")


def locate_public_keys(directory: str | os.PathLike[str], env: Mapping[str, str] | None = None) -> list[Path]:
    """The ``*.key`` files of a directory of client certificates (see :func:`authorized_files`), sorted."""
    return [p for p in authorized_files(directory, env) if p.name.endswith(PUBLIC_SUFFIX)]


def holds_secret_key(path: Path) -> bool:
    """Whether ``path`` is a secret certificate: named ``*.key_secret``, or with a ``secret-key`` entry
    in its first 64 KiB (a renamed or backed-up secret file). An unreadable file counts as not."""
    if path.name.endswith(SECRET_SUFFIX):
        return True
    try:
        with path.open("rb") as f:
            head = f.read(_SNIFF_BYTES)
    except OSError:
        return False
    return _SECRET_ENTRY.search(head) is not None


def secret_in_authorized(directory: str | os.PathLike[str], path: Path) -> str:
    """The error for a secret key file found among the client keys: it names the file and the fix."""
    return (f"authorized_keys {directory}: {path} holds a secret key; only public keys (NAME{PUBLIC_SUFFIX}) "
            f"belong there: move it out (a client's NAME{SECRET_SUFFIX} stays on the client)")


# -- reading certificates -----------------------------------------------------------------------
def load_authorized_keys(directory: str | os.PathLike[str], env: Mapping[str, str] | None = None) -> frozenset[bytes]:
    """The Z85 public keys of every ``*.key`` certificate in ``directory`` (may be empty).

    A secret key file anywhere in the directory is a KeyFileError naming it: the folder of admitted
    keys is no place for secrets (it is often readable by the service's group, and copied around).
    """
    files = authorized_files(directory, env)
    for path in files:
        if holds_secret_key(path):
            raise KeyFileError(secret_in_authorized(directory, path))
    return frozenset(read_certificate(p, "client key", secret=False)[0] for p in files
                     if p.name.endswith(PUBLIC_SUFFIX))


def load_server_keys(
    server_secret_key: str | os.PathLike[str],
    authorized_keys: str | os.PathLike[str],
    env: Mapping[str, str] | None = None,
) -> CurveServerKeys:
    """The daemon's key pair (from its ``.key_secret``) and the client keys it admits.

    An empty ``authorized_keys`` directory is allowed (every subscriber is refused) and warned about.
    """
    public, secret = read_secret(server_secret_key, "server secret key", env)
    authorized = load_authorized_keys(authorized_keys, env)
    if not authorized:
        log.warning("no client keys (*.key) in %s: every subscriber will be refused", authorized_keys)
    return CurveServerKeys(public_key=public, secret_key=secret, authorized=authorized)


# -- configuration ------------------------------------------------------------------------------
def server_keys_from_config(config: Any, env: Mapping[str, str] | None = None) -> CurveServerKeys | None:
    """``load_server_keys`` for ``config.publish.curve``, or None when CURVE is not configured."""
    curve = getattr(config.publish, "curve", None)
    if curve is None:
        return None
    return load_server_keys(curve.server_secret_key, curve.authorized_keys, env)


def check_curve(config: Any, env: Mapping[str, str] | None = None) -> list[str]:
    """Problems with ``config.publish.curve``'s files, one line each (empty: fine or not configured).

    For ``streamdet check``: a missing or malformed server certificate, a secret readable by
    other users, a missing or empty ``authorized_keys`` directory, a secret key file in it (each
    named), a malformed client certificate.
    """
    curve = getattr(config.publish, "curve", None)
    if curve is None:
        return []
    problems: list[str] = []
    try:
        found = locate_file(curve.server_secret_key, "server secret key", env)
        read_certificate(found, "server secret key", secret=True)
        warning = exposed_mode(found)
        if warning:
            problems.append(f"publish.curve.server_secret_key: {warning}")
    except KeyFileError as exc:
        problems.append(f"publish.curve.server_secret_key: {exc}")
    try:
        files = authorized_files(curve.authorized_keys, env)
        secrets = [p for p in files if holds_secret_key(p)]
        problems.extend(f"publish.curve.authorized_keys: {secret_in_authorized(curve.authorized_keys, path)}"
                        for path in secrets)
        public = [p for p in files if p.name.endswith(PUBLIC_SUFFIX) and p not in secrets]
        if not public and not secrets:
            problems.append(
                f"publish.curve.authorized_keys: no client keys (*{PUBLIC_SUFFIX}) in {curve.authorized_keys}: "
                "every subscriber would be refused"
            )
        for path in public:
            try:
                read_certificate(path, "client key", secret=False)
            except KeyFileError as exc:
                problems.append(f"publish.curve.authorized_keys: {exc}")
    except KeyFileError as exc:
        problems.append(f"publish.curve.authorized_keys: {exc}")
    return problems
