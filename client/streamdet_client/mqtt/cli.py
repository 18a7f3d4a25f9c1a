"""The standalone bridge's command line: ``streamdet-bridge`` (light client) and ``streamdet bridge mqtt``.

Both share :func:`add_arguments` and :func:`run_from_args`: one daemon's endpoint (Curve keys as
``streamdet subscribe`` takes them) into one broker. The password is read from an environment
variable (``--password-env``), never from the command line, where every user of the host could
read it. SIGTERM and Ctrl-C stop the bridge cleanly (``offline`` published).
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import socket
import sys
import threading
from collections.abc import Sequence
from pathlib import Path

from streamdet_client.errors import StreamdetError
from streamdet_client.mqtt.settings import PROTOCOLS, BridgeSettings, TlsSettings, topic_safe_hostname

DEFAULT_ENDPOINT = "tcp://127.0.0.1:5555"


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The bridge's options, added to ``p``."""
    p.add_argument("--endpoint", default=DEFAULT_ENDPOINT, help=f"the daemon's endpoint (default {DEFAULT_ENDPOINT})")
    p.add_argument("--server-key", help="CurveZMQ: the daemon's public key file (NAME.key)")
    p.add_argument("--client-key", help="CurveZMQ: this client's secret key file (NAME.key_secret)")
    p.add_argument("--host", required=True, help="the MQTT broker's host name or address")
    p.add_argument("--port", type=int, help="broker port (default 1883, 8883 with TLS)")
    p.add_argument("--gateway-id", help="this gateway's topic level, unique per gateway (default: the host name)")
    p.add_argument("--topic-prefix", default="streamdet", help="first topic level(s) (default streamdet)")
    p.add_argument("--username", help="broker user name (with --password-env)")
    p.add_argument("--password-env", metavar="VAR", help="environment variable holding the broker password")
    p.add_argument("--tls", action="store_true", help="TLS to the broker (implied by --ca-file/--cert-file)")
    p.add_argument("--ca-file", type=Path, help="CA certificate(s) that sign the broker's (default: the system's)")
    p.add_argument("--cert-file", type=Path, help="client certificate (with --key-file)")
    p.add_argument("--key-file", type=Path, help="client certificate's key")
    p.add_argument("--insecure", action="store_true", help="TLS without checking the broker's host name")
    p.add_argument("--qos", type=int, choices=(0, 1), default=0, help="QoS of the detections (default 0)")
    p.add_argument("--max-queued", type=int, default=1000,
                   help="messages kept while the broker is unreachable; then the oldest are dropped (default 1000)")
    p.add_argument("--protocol", choices=PROTOCOLS, default="3.1.1", help="MQTT protocol version (default 3.1.1)")
    p.add_argument("--stats-interval", type=float, default=10.0, help="seconds between stats messages (default 10)")
    p.add_argument("--log-level", choices=("debug", "info", "warning", "error"), default="info")


def settings_from_args(args: argparse.Namespace, env: dict[str, str] | None = None) -> BridgeSettings:
    """BridgeSettings from parsed options; StreamdetError names a bad or missing one."""
    environ = dict(os.environ) if env is None else env
    password = None
    if args.password_env is not None:
        if args.password_env not in environ:
            raise StreamdetError(f"--password-env {args.password_env}: no such environment variable")
        password = environ[args.password_env]
    if (args.username is None) != (password is None):
        raise StreamdetError("--username and --password-env go together (both or neither)")
    tls = None
    if args.tls or args.ca_file or args.cert_file or args.key_file or args.insecure:
        for name in ("ca_file", "cert_file", "key_file"):
            path = getattr(args, name)
            if path is not None and not path.is_file():
                raise StreamdetError(f"--{name.replace('_', '-')} {path}: no such file")
        tls = TlsSettings(args.ca_file, args.cert_file, args.key_file, args.insecure)
    return BridgeSettings(
        host=args.host, port=args.port, gateway_id=args.gateway_id or topic_safe_hostname(socket.gethostname()),
        topic_prefix=args.topic_prefix, username=args.username, password=password, tls=tls, qos=args.qos,
        max_queued=args.max_queued, protocol=args.protocol, stats_interval_s=args.stats_interval,
    )


def run_from_args(args: argparse.Namespace) -> int:
    """Run the bridge until SIGTERM or Ctrl-C; returns the exit status (0)."""
    from streamdet_client.mqtt.bridge import MqttBridge

    settings = settings_from_args(args)
    stop = threading.Event()
    previous = {s: signal.signal(s, lambda *_: stop.set()) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        bridge = MqttBridge(settings, args.endpoint, server_key=args.server_key, client_key=args.client_key)
        bridge.run(stop.is_set)
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """``streamdet-bridge``: exit 0 when stopped, 2 for bad options (one line on stderr)."""
    p = argparse.ArgumentParser(prog="streamdet-bridge",
                                description="Forward a streamdet daemon's detections into an MQTT broker.")
    add_arguments(p)
    args = p.parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        return run_from_args(args)
    except StreamdetError as exc:
        print(f"streamdet-bridge: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
