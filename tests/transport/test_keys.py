"""Key pairs and certificates: keygen's files, loading with errors that name files (never keys),
systemd credentials, check_curve, and ``streamdet keygen`` on the command line."""

from __future__ import annotations

import io
import logging
import re
import stat
from pathlib import Path
from types import SimpleNamespace

import pytest
import zmq
from zmq.auth import load_certificate

from streamdet import cli
from streamdet.transport.keys import (
    KeyFileError,
    check_curve,
    keygen,
    keygen_main,
    load_authorized_keys,
    load_client_keys,
    load_server_keys,
    server_keys_from_config,
)
from tests.helpers.curve import make_keys


def curve_config(secret: Path, authorized: Path) -> SimpleNamespace:
    """The part of a Config that transport/keys.py reads."""
    return SimpleNamespace(publish=SimpleNamespace(curve=SimpleNamespace(server_secret_key=secret,
                                                                         authorized_keys=authorized)))


def test_keygen_writes_a_zmq_auth_certificate_pair(tmp_path: Path) -> None:
    public, secret = keygen(tmp_path / "new" / "dir", "server")
    assert public == tmp_path / "new" / "dir" / "server.key"
    assert secret == tmp_path / "new" / "dir" / "server.key_secret"
    pub_key, no_secret = load_certificate(public)
    pub_again, secret_key = load_certificate(secret)
    assert no_secret is None and "secret-key" not in public.read_text()
    assert secret_key is not None and pub_again == pub_key
    assert zmq.curve_public(secret_key) == pub_key  # a real key pair
    assert stat.S_IMODE(secret.stat().st_mode) == 0o600
    assert stat.S_IMODE(public.stat().st_mode) == 0o644
    assert sorted(p.name for p in public.parent.iterdir()) == ["server.key", "server.key_secret"]  # no scratch left


def test_keygen_refuses_to_overwrite_unless_forced(tmp_path: Path) -> None:
    public, secret = keygen(tmp_path, "alice")
    before = (public.read_bytes(), secret.read_bytes())
    with pytest.raises(KeyFileError, match="refusing to overwrite .*alice.key.*--force"):
        keygen(tmp_path, "alice")
    assert (public.read_bytes(), secret.read_bytes()) == before
    secret.unlink()  # one of the two still there is enough to refuse
    with pytest.raises(KeyFileError, match="refusing to overwrite"):
        keygen(tmp_path, "alice")
    assert not secret.exists()
    keygen(tmp_path, "alice", force=True)
    assert public.read_bytes() != before[0] and stat.S_IMODE(secret.stat().st_mode) == 0o600
    assert sorted(p.name for p in tmp_path.iterdir()) == ["alice.key", "alice.key_secret"]


@pytest.mark.parametrize("name", ["", ".", "..", "a/b"])
def test_keygen_rejects_bad_names(tmp_path: Path, name: str) -> None:
    with pytest.raises(KeyFileError, match="invalid key name"):
        keygen(tmp_path, name)


def test_keygen_main_prints_paths_never_the_secret(tmp_path: Path) -> None:
    out = io.StringIO()
    assert keygen_main(str(tmp_path), "server", out=out) == 0
    secret = load_certificate(tmp_path / "server.key_secret")[1]
    assert secret is not None
    text = out.getvalue()
    assert str(tmp_path / "server.key") in text and str(tmp_path / "server.key_secret") in text
    assert secret.decode() not in text


def test_cli_keygen(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["keygen", str(tmp_path / "k"), "server"]) == 0
    secret = load_certificate(tmp_path / "k" / "server.key_secret")[1]
    assert secret is not None
    first = capsys.readouterr()
    assert "server.key_secret" in first.out and secret.decode() not in first.out + first.err
    assert cli.main(["keygen", str(tmp_path / "k"), "server"]) == 1
    assert "refusing to overwrite" in capsys.readouterr().err
    assert cli.main(["keygen", "--force", str(tmp_path / "k"), "server"]) == 0
    assert load_certificate(tmp_path / "k" / "server.key_secret")[1] != secret


def test_keygen_public_dir_writes_the_public_half_alone_there(tmp_path: Path) -> None:
    clients = tmp_path / "server" / "clients"  # a server's authorized_keys folder
    public, secret = keygen(tmp_path / "alice", "alice", public_dir=clients)
    assert (public, secret) == (clients / "alice.key", tmp_path / "alice" / "alice.key_secret")
    assert sorted(p.name for p in clients.iterdir()) == ["alice.key"]  # no secret, no scratch folder left
    assert sorted(p.name for p in secret.parent.iterdir()) == ["alice.key_secret"]
    secret_key = load_certificate(secret)[1]
    assert secret_key is not None and zmq.curve_public(secret_key) == load_certificate(public)[0]  # one pair
    assert stat.S_IMODE(public.stat().st_mode) == 0o644 and stat.S_IMODE(secret.stat().st_mode) == 0o600
    assert load_authorized_keys(clients) == {load_certificate(public)[0]}
    with pytest.raises(KeyFileError, match=r"refusing to overwrite .*clients/alice.key "):
        keygen(tmp_path / "elsewhere", "alice", public_dir=clients)  # the public name is taken
    assert not (tmp_path / "elsewhere" / "alice.key_secret").exists()
    keygen(tmp_path / "alice", "alice", public_dir=clients, force=True)
    new_secret = load_certificate(secret)[1]
    assert new_secret is not None and new_secret != secret_key
    assert zmq.curve_public(new_secret) == load_certificate(public)[0]  # both halves replaced, still one pair


def test_cli_keygen_public_dir(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["keygen", str(tmp_path / "me"), "alice", "--public-dir", str(tmp_path / "clients")]) == 0
    out = capsys.readouterr().out
    assert f"public key:  {tmp_path / 'clients' / 'alice.key'}\n" in out
    assert f"secret key:  {tmp_path / 'me' / 'alice.key_secret'}  " in out
    assert [p.name for p in (tmp_path / "clients").iterdir()] == ["alice.key"]


def test_a_secret_key_among_the_client_keys_is_refused(tmp_path: Path) -> None:
    keys = make_keys(tmp_path)
    (keys.authorized_dir / "notes.txt").write_text("alice: laptop\n")  # other files are fine
    assert load_server_keys(keys.server_secret, keys.authorized_dir).authorized
    assert check_curve(curve_config(keys.server_secret, keys.authorized_dir)) == []
    # by its name, by its content under another name (renamed, or an editor's backup), or as a credential
    misplaced = [keys.authorized_dir / "alice.key_secret", keys.authorized_dir / "bob.key",
                 keys.authorized_dir / "alice.key_secret~"]
    for path in misplaced:
        path.write_bytes(keys.alice_secret.read_bytes())
        with pytest.raises(KeyFileError, match=re.escape(f"{path} holds a secret key; only public keys")) as info:
            load_server_keys(keys.server_secret, keys.authorized_dir)
        assert not any(secret in str(info.value) for secret in keys.secrets())
        problems = check_curve(curve_config(keys.server_secret, keys.authorized_dir))
        assert problems == [f"publish.curve.authorized_keys: authorized_keys {keys.authorized_dir}: {path} holds a "
                            "secret key; only public keys (NAME.key) belong there: move it out (a client's "
                            "NAME.key_secret stays on the client)"]
        path.unlink()
    creds = tmp_path / "credentials"
    creds.mkdir()
    (creds / "clients_alice.key").write_bytes(keys.alice_public.read_bytes())
    (creds / "clients_alice.key_secret").write_bytes(keys.alice_secret.read_bytes())
    env = {"CREDENTIALS_DIRECTORY": str(creds)}
    with pytest.raises(KeyFileError, match="clients_alice.key_secret holds a secret key"):
        load_authorized_keys(tmp_path / "etc" / "clients", env=env)
    (creds / "clients_alice.key_secret").unlink()
    assert load_authorized_keys(tmp_path / "etc" / "clients", env=env) == {load_certificate(keys.alice_public)[0]}


def test_load_server_and_client_keys(tmp_path: Path) -> None:
    keys = make_keys(tmp_path)
    server = load_server_keys(keys.server_secret, keys.authorized_dir)
    assert server.public_key == load_certificate(keys.server_public)[0]
    assert server.authorized == {load_certificate(keys.alice_public)[0]}
    client = load_client_keys(keys.server_public, keys.alice_secret)
    assert client.server_key == server.public_key
    assert client.public_key == load_certificate(keys.alice_public)[0]
    for secret in keys.secrets():
        assert secret not in repr(server) and secret not in repr(client)


def test_load_errors_name_the_file_not_the_key(tmp_path: Path) -> None:
    keys = make_keys(tmp_path)
    with pytest.raises(KeyFileError, match=r"client key .*missing.key_secret: no such file"):
        load_client_keys(keys.server_public, tmp_path / "missing.key_secret")
    with pytest.raises(KeyFileError, match=r"alice.key: has no secret key"):
        load_client_keys(keys.server_public, keys.alice_public)  # the public half given by mistake
    with pytest.raises(KeyFileError, match="is a directory"):
        load_client_keys(tmp_path, keys.alice_secret)
    garbage = tmp_path / "garbage.key_secret"
    garbage.write_bytes(b"\x00\x01 not a certificate")
    with pytest.raises(KeyFileError, match="not a ZeroMQ certificate"):
        load_client_keys(keys.server_public, garbage)
    short = tmp_path / "short.key_secret"
    secret = keys.secrets()[1]
    short.write_text(f'curve\n    public-key = "{"x" * 40}"\n    secret-key = "{secret[:-1]}"\n')
    with pytest.raises(KeyFileError, match="secret key is not a 40-character Z85 key") as info:
        load_client_keys(keys.server_public, short)
    assert secret[:-1] not in str(info.value)
    with pytest.raises(KeyFileError, match=r"authorized_keys .*nowhere: no such directory"):
        load_server_keys(keys.server_secret, tmp_path / "nowhere")
    with pytest.raises(KeyFileError, match="not a directory"):
        load_server_keys(keys.server_secret, keys.alice_public)


def test_credentials_directory_supplies_missing_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    keys = make_keys(tmp_path / "src")
    creds = tmp_path / "credentials"  # as systemd fills it: LoadCredential=server.key_secret:... and
    creds.mkdir()                     # LoadCredential=clients:/etc/streamdet/clients (a directory)
    (creds / "server.key_secret").write_bytes(keys.server_secret.read_bytes())
    (creds / "clients_alice.key").write_bytes(keys.alice_public.read_bytes())
    configured_secret = tmp_path / "etc" / "keys" / "server.key_secret"  # not there
    configured_dir = tmp_path / "etc" / "keys" / "clients"
    monkeypatch.delenv("CREDENTIALS_DIRECTORY", raising=False)
    with pytest.raises(KeyFileError, match=r"server secret key .*etc/keys/server.key_secret: no such file$"):
        load_server_keys(configured_secret, configured_dir)
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(creds))
    server = load_server_keys(configured_secret, configured_dir)
    assert server.public_key == load_certificate(keys.server_public)[0]
    assert server.authorized == {load_certificate(keys.alice_public)[0]}
    # an explicit env mapping works the same, and a missing name says where it was looked for
    looked = r"no such file \(nor .*credentials/other.key_secret in \$CREDENTIALS_DIRECTORY\)"
    with pytest.raises(KeyFileError, match=looked):
        load_server_keys(tmp_path / "other.key_secret", configured_dir, env={"CREDENTIALS_DIRECTORY": str(creds)})
    with pytest.raises(KeyFileError, match=r"nor others_\*.key in \$CREDENTIALS_DIRECTORY"):
        load_authorized_keys(tmp_path / "others", env={"CREDENTIALS_DIRECTORY": str(creds)})
    # a path that exists as given wins over the credentials directory
    assert load_authorized_keys(keys.authorized_dir) == server.authorized


def test_exposed_secret_is_warned_about(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    keys = make_keys(tmp_path)
    keys.server_secret.chmod(0o644)
    caplog.set_level(logging.DEBUG)
    load_server_keys(keys.server_secret, keys.authorized_dir)
    assert "accessible to other users (mode 0644)" in caplog.text
    for secret in keys.secrets():
        assert secret not in caplog.text


def test_empty_authorized_directory_is_allowed_and_warned(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    keys = make_keys(tmp_path)
    empty = tmp_path / "empty"
    empty.mkdir()
    server = load_server_keys(keys.server_secret, empty)
    assert server.authorized == frozenset()
    assert "every subscriber will be refused" in caplog.text


def test_check_curve(tmp_path: Path) -> None:
    keys = make_keys(tmp_path)
    assert check_curve(SimpleNamespace(publish=SimpleNamespace(curve=None))) == []
    assert check_curve(curve_config(keys.server_secret, keys.authorized_dir)) == []
    problems = check_curve(curve_config(tmp_path / "nope.key_secret", tmp_path / "nodir"), env={})
    assert len(problems) == 2
    assert problems[0].startswith("publish.curve.server_secret_key: ")
    assert "nope.key_secret: no such file" in problems[0]
    assert problems[1].startswith("publish.curve.authorized_keys: ") and "nodir: no such directory" in problems[1]
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "bad.key").write_text("nothing here\n")
    keys.server_secret.chmod(0o640)
    problems = check_curve(curve_config(keys.server_secret, empty))
    assert any("mode 0640" in p for p in problems)
    assert any("bad.key: not a ZeroMQ certificate" in p for p in problems)
    (empty / "bad.key").unlink()
    assert any("every subscriber would be refused" in p for p in check_curve(curve_config(keys.server_secret, empty)))
    problems = check_curve(curve_config(keys.alice_public, keys.authorized_dir))  # public half configured
    assert problems == [f"publish.curve.server_secret_key: server secret key {keys.alice_public}: has no secret key "
                        "(the .key_secret file is needed, not the .key)"]


# -- publish.curve in the configuration -------------------------------------------------------------
CURVE_CONFIG = """\
model: {weights: model.pt}
publish:
  endpoint: "%s"
  curve:
    server_secret_key: keys/server.key_secret
    authorized_keys: keys/clients/
cameras:
  - {id: lobby, url: lobby.mp4}
"""


def test_config_curve_paths_resolve_against_the_config_file(tmp_path: Path) -> None:
    from streamdet.config import parse_config

    (tmp_path / "model.pt").write_bytes(b"w")
    (tmp_path / "lobby.mp4").write_bytes(b"v")
    config = parse_config(CURVE_CONFIG % "tcp://0.0.0.0:5555", tmp_path, env={})
    curve = config.publish.curve
    assert curve is not None
    assert curve.server_secret_key == tmp_path / "keys" / "server.key_secret"
    assert curve.authorized_keys == tmp_path / "keys" / "clients"
    # files are not required at load time (systemd credentials may supply them); check reports them
    problems = check_curve(config, env={})
    assert [p.split(":")[0] for p in problems] == ["publish.curve.server_secret_key", "publish.curve.authorized_keys"]
    keys = tmp_path / "keys"
    keygen(keys, "server")
    keygen(tmp_path / "alice", "alice", public_dir=keys / "clients")
    assert check_curve(config, env={}) == []
    server = server_keys_from_config(config, env={})
    assert server is not None and len(server.authorized) == 1
    # CURVE works on ipc:// endpoints too
    ipc = parse_config(CURVE_CONFIG % f"ipc://{tmp_path}/det.sock", tmp_path, env={})
    assert ipc.publish.curve == curve
    head = (CURVE_CONFIG % "tcp://127.0.0.1:5555").split("  curve:")[0]
    without = head + "cameras:\n  - {id: lobby, url: lobby.mp4}\n"
    plain = parse_config(without, tmp_path, env={})
    assert plain.publish.curve is None and server_keys_from_config(plain) is None


def test_config_curve_needs_both_keys(tmp_path: Path) -> None:
    from streamdet.config import parse_config
    from streamdet.errors import ConfigError

    (tmp_path / "model.pt").write_bytes(b"w")
    (tmp_path / "lobby.mp4").write_bytes(b"v")
    text = CURVE_CONFIG.replace("    authorized_keys: keys/clients/\n", "") % "tcp://127.0.0.1:5555"
    with pytest.raises(ConfigError, match=r"publish\.curve\.authorized_keys.*(missing|required)"):
        parse_config(text, tmp_path, env={})
