#!/usr/bin/python3
"""Test RTSP server: serves H.264 MP4 files in a loop, paced in real time, on 127.0.0.1 only.

Runs under Debian's ``/usr/bin/python3`` with GStreamer's introspection bindings (packages
python3-gi, gir1.2-gstreamer-1.0, gir1.2-gst-rtsp-server-1.0, gstreamer1.0-plugins-base,
gstreamer1.0-plugins-good, gstreamer1.0-plugins-bad), not in the project's virtualenv.

    rtsp_server.py --port 8554 --mount /cam a.mp4 [--mount /cam2 b.mp4] [--max-seconds 600]

Each file's H.264 access units are read once into memory (``filesrc ! qtdemux ! h264parse !
appsink``; meant for small test clips). Each mount serves one shared media,
``appsrc ! h264parse ! rtph264pay name=pay0 pt=96``: the appsrc is fed on demand with those
access units, timestamps continuing across loops, so the file repeats forever without a gap or
a timestamp jump; the server's sinks sync on the clock, which paces the stream in real time.
(A plain ``filesrc ! qtdemux`` media cannot loop: EOS ends the RTSP session.) A new media
starts the file from its first access unit (a keyframe).

Known quirk of gst-rtsp-server's shared media: a client that only DESCRIBEs unprepares the
media as it disconnects, and a client connecting during those few milliseconds gets a 503;
clients that retry (ours do) are unaffected, and tests/helpers/rtsp.py waits 0.3 s after its
readiness DESCRIBE.

Prints ``READY rtsp://127.0.0.1:PORT`` on stdout once listening. Exits on SIGTERM/SIGINT, after
``--max-seconds``, and when its parent process dies (so a crashed test never leaves it behind):
it polls its parent, and on Linux also asks the kernel to SIGKILL it when the parent dies, which
also reaches a server that a test froze with SIGSTOP (the kernel's rule: when the parent
*thread* that started it exits, so start it from a thread that outlives it).
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import os
import signal
import sys

import gi

gi.require_version("Gst", "1.0")
gi.require_version("GstRtspServer", "1.0")
from gi.repository import GLib, Gst, GstRtspServer  # noqa: E402


def load_access_units(path: str) -> tuple[Gst.Caps, list[Gst.Buffer], int]:
    """Read every H.264 access unit of an MP4 file: (caps, buffers, loop duration in ns)."""
    pipeline = Gst.parse_launch(
        "filesrc name=src ! qtdemux ! h264parse ! "
        "video/x-h264,stream-format=avc,alignment=au ! appsink name=sink sync=false"
    )
    pipeline.get_by_name("src").set_property("location", path)
    sink = pipeline.get_by_name("sink")
    pipeline.set_state(Gst.State.PLAYING)
    caps = None
    buffers: list[Gst.Buffer] = []
    while True:
        sample = sink.emit("try-pull-sample", 10 * Gst.SECOND)
        if sample is None:
            break
        caps = caps or sample.get_caps()
        buffers.append(sample.get_buffer().copy_deep())
    bus = pipeline.get_bus()
    error = bus.pop_filtered(Gst.MessageType.ERROR)
    pipeline.set_state(Gst.State.NULL)
    if error is not None or not buffers or caps is None:
        detail = error.parse_error()[0].message if error is not None else "no H.264 video found"
        raise SystemExit(f"rtsp_server: cannot read {path}: {detail}")
    first = buffers[0].pts
    frame_ns = buffers[1].pts - first if len(buffers) > 1 else Gst.SECOND // 25
    end = max(b.pts + (b.duration if b.duration != Gst.CLOCK_TIME_NONE else frame_ns) for b in buffers)
    return caps, buffers, end - first


class LoopFeeder:
    """Feeds one media's appsrc with the file's access units, forever, timestamps continuing."""

    def __init__(self, caps: Gst.Caps, buffers: list[Gst.Buffer], loop_ns: int) -> None:
        self.caps = caps
        self.buffers = buffers
        self.loop_ns = loop_ns
        self.base = buffers[0].pts
        self.index = 0
        self.offset = 0

    def attach(self, appsrc: Gst.Element) -> None:
        appsrc.set_property("caps", self.caps)
        appsrc.set_property("format", Gst.Format.TIME)
        appsrc.set_property("max-buffers", 8)
        appsrc.connect("need-data", self.on_need_data)

    def on_need_data(self, appsrc: Gst.Element, _length: int) -> None:
        src = self.buffers[self.index]
        buf = src.copy()
        buf.pts = src.pts - self.base + self.offset
        if src.dts != Gst.CLOCK_TIME_NONE:
            buf.dts = src.dts - self.base + self.offset if src.dts >= self.base else self.offset
        appsrc.emit("push-buffer", buf)
        self.index += 1
        if self.index == len(self.buffers):
            self.index = 0
            self.offset += self.loop_ns


class LoopingFactory(GstRtspServer.RTSPMediaFactory):
    """Shared media of one file; every new media gets its own feeder."""

    def __init__(self, path: str) -> None:
        super().__init__()
        self.caps, self.buffers, self.loop_ns = load_access_units(path)
        self.set_launch("( appsrc name=src ! h264parse ! rtph264pay name=pay0 pt=96 config-interval=-1 )")
        self.set_shared(True)
        self.connect("media-configure", self.on_media_configure)

    def on_media_configure(self, _factory: GstRtspServer.RTSPMediaFactory,
                           media: GstRtspServer.RTSPMedia) -> None:
        feeder = LoopFeeder(self.caps, self.buffers, self.loop_ns)
        feeder.attach(media.get_element().get_by_name("src"))


def die_with_parent() -> None:
    """Linux: SIGKILL this process when its parent dies (PR_SET_PDEATHSIG); best effort."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None).prctl(1, signal.SIGKILL)  # 1 = PR_SET_PDEATHSIG


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--mount", nargs=2, action="append", metavar=("PATH", "FILE"), required=True,
                        help="mount point (e.g. /cam) and the MP4 file it serves; repeatable")
    parser.add_argument("--max-seconds", type=float, default=600.0, help="exit after this long")
    args = parser.parse_args(argv)
    die_with_parent()

    Gst.init(None)
    server = GstRtspServer.RTSPServer()
    server.set_address("127.0.0.1")
    server.set_service(str(args.port))
    mounts = server.get_mount_points()
    for mount, path in args.mount:
        if not mount.startswith("/"):
            parser.error(f"mount must start with '/': {mount}")
        mounts.add_factory(mount, LoopingFactory(os.path.abspath(path)))

    loop = GLib.MainLoop()
    if server.attach(None) == 0:
        print(f"rtsp_server: cannot listen on 127.0.0.1:{args.port}", file=sys.stderr, flush=True)
        return 1
    parent = os.getppid()

    def quit_loop(*_args: object) -> bool:
        loop.quit()
        return GLib.SOURCE_REMOVE

    def check_parent() -> bool:
        if os.getppid() != parent:
            loop.quit()
            return GLib.SOURCE_REMOVE
        return GLib.SOURCE_CONTINUE

    GLib.unix_signal_add(GLib.PRIORITY_HIGH, signal.SIGTERM, quit_loop, "term")
    GLib.unix_signal_add(GLib.PRIORITY_HIGH, signal.SIGINT, quit_loop, "int")
    GLib.timeout_add(int(args.max_seconds * 1000), quit_loop, "max")
    GLib.timeout_add(500, check_parent)
    print(f"READY rtsp://127.0.0.1:{args.port}", flush=True)
    loop.run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
