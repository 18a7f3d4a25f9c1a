"""What ``streamdet check``, the daemon's start and a reload find wrong with ``mqtt:`` before a bridge runs.

The schema checks the values; this checks the environment: paho-mqtt 2.x installed, and the TLS
files readable. One line per problem, naming the key and the file (never the password).
"""

from __future__ import annotations

import importlib.util
import os
from typing import Any


def mqtt_problems(config: Any) -> list[str]:
    """Problems of ``config.mqtt`` (empty: fine, or no ``mqtt:`` section)."""
    mqtt = getattr(config, "mqtt", None)
    if mqtt is None:
        return []
    problems = []
    if importlib.util.find_spec("paho") is None or importlib.util.find_spec("paho.mqtt.client") is None:
        problems.append("mqtt: the MQTT bridge needs paho-mqtt 2.x: pip install 'streamdet[mqtt]'")
    else:
        from paho.mqtt import __version__ as paho_version

        if not paho_version.startswith("2."):
            problems.append(f"mqtt: the MQTT bridge needs paho-mqtt 2.x, found {paho_version}: "
                            "pip install 'paho-mqtt>=2,<3'")
    tls = mqtt.tls
    for key in ("ca_file", "cert_file", "key_file"):
        path = None if tls is None else getattr(tls, key)
        if path is None:
            continue
        if not path.is_file():
            problems.append(f"mqtt.tls.{key}: {path}: no such file")
        elif not os.access(path, os.R_OK):
            problems.append(f"mqtt.tls.{key}: {path}: permission denied")
    return problems
