"""CURVE key sets for tests: a server, one authorized client (alice), one stranger (mallory)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from zmq.auth import load_certificate

from streamdet.transport.keys import keygen


@dataclass(frozen=True)
class KeySet:
    """Paths of a generated key set and every secret in it (to check that none is ever printed)."""

    server_public: Path
    server_secret: Path
    authorized_dir: Path
    alice_public: Path
    alice_secret: Path
    mallory_public: Path
    mallory_secret: Path

    def secrets(self) -> list[str]:
        """The Z85 secret keys of the set."""
        out = []
        for path in (self.server_secret, self.alice_secret, self.mallory_secret):
            secret = load_certificate(path)[1]
            assert secret is not None
            out.append(secret.decode())
        return out


def make_keys(root: Path) -> KeySet:
    """``root/server.*``, ``root/clients/alice.key`` (authorized; its secret in ``root/alice/``, as the
    daemon refuses a secret key among the client keys), ``root/others/mallory.*`` (not authorized)."""
    server_public, server_secret = keygen(root, "server")
    alice_public, alice_secret = keygen(root / "alice", "alice", public_dir=root / "clients")
    mallory_public, mallory_secret = keygen(root / "others", "mallory")
    return KeySet(server_public, server_secret, root / "clients", alice_public, alice_secret,
                    mallory_public, mallory_secret)
