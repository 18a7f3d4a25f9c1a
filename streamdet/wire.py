"""The published message contract, version 1 (docs/wire.md).

Defined in the light client, :mod:`streamdet_client.wire`, and re-exported here: the daemon and every
subscriber share this one definition (``pip install ./client`` installs it alone, with pyzmq only).
"""

from streamdet_client.wire import (
    CAMERA_ID_PATTERN,
    DETECTIONS,
    DETECTIONS_PREFIX,
    STATS,
    STATS_TOPIC,
    VERSION,
    decode,
    detection_message,
    detection_topic,
    encode,
    is_camera_id,
    stats_message,
    validate,
)

__all__ = ["CAMERA_ID_PATTERN", "DETECTIONS", "DETECTIONS_PREFIX", "STATS", "STATS_TOPIC", "VERSION", "decode",
           "detection_message", "detection_topic", "encode", "is_camera_id", "stats_message", "validate"]
