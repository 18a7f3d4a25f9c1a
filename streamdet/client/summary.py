"""``streamdet subscribe --summary`` lines: defined in the light client, :mod:`streamdet_client.summary`."""

from streamdet_client.summary import camera_line as camera_line
from streamdet_client.summary import summary_lines as summary_lines
