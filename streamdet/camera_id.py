"""The camera id pattern of the config schema and the wire (topics ``det/<id>/``).

Defined in the light client, :mod:`streamdet_client.camera_id`, and re-exported here: the daemon and every
subscriber share this one definition (``pip install ./client`` installs it alone, with pyzmq only).
"""

from streamdet_client.camera_id import CAMERA_ID_PATTERN, CAMERA_ID_RE, is_valid_camera_id

__all__ = ["CAMERA_ID_PATTERN", "CAMERA_ID_RE", "is_valid_camera_id"]
