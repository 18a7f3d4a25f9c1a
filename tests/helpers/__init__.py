"""Reusable test helpers: synthetic H.264 clips (``media``) and a real RTSP server (``rtsp``).

Import as ``from tests.helpers.media import make_test_clip``.
"""
