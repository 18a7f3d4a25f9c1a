"""Receive streamdet messages: defined in the light client, :mod:`streamdet_client.subscriber`, re-exported here."""

from streamdet_client.subscriber import Subscriber as Subscriber
from streamdet_client.subscriber import client_curve_keys as client_curve_keys
from streamdet_client.subscriber import subscribe_main as subscribe_main
