"""A real RTSP server for tests: tools/rtsp_server.py (GStreamer) run by Debian's /usr/bin/python3.

    server = RtspServer({"/cam": clip_path})
    server.start()            # free 127.0.0.1 port, waits for READY and a successful DESCRIBE
    url = server.url("/cam")  # rtsp://127.0.0.1:PORT/cam
    server.stop()             # SIGTERM (kill if needed): clients see the connection drop
    server.start()            # again, same port (reconnect tests)
    server.pause()            # SIGSTOP: a frozen server (connections stay open, nothing is sent)
    server.resume()           # SIGCONT
    server.kill()             # SIGKILL: a crashed server (the kernel closes its connections)

``files`` may be changed between a stop and a start (a camera restarted with another clip,
e.g. another resolution). A server started with ``port=free_port()`` has its URL before it
runs (a camera unreachable at start).

Use it as a context manager or call ``stop()``; it is also killed when the test process exits,
and the server exits by itself when its parent dies or after ``max_seconds``.
If GStreamer's RTSP server is not installed the calling test FAILS (it does not skip), naming
the Debian packages to install.
"""

from __future__ import annotations

import os
import select
import signal
import socket
import subprocess
import tempfile
import time
import weakref
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SERVER_SCRIPT = REPO / "tools" / "rtsp_server.py"
SYSTEM_PYTHON = "/usr/bin/python3"
DEBIAN_PACKAGES = ("python3-gi gir1.2-gstreamer-1.0 gir1.2-gst-rtsp-server-1.0 gstreamer1.0-plugins-base "
                   "gstreamer1.0-plugins-good gstreamer1.0-plugins-bad")
_CHECK = (
    "import gi; gi.require_version('Gst', '1.0'); gi.require_version('GstRtspServer', '1.0');"
    "from gi.repository import Gst, GstRtspServer; Gst.init(None);"
    "missing = [e for e in ('appsrc', 'appsink', 'filesrc', 'qtdemux', 'h264parse', 'rtph264pay')"
    " if Gst.ElementFactory.find(e) is None];"
    "print('missing elements: ' + ' '.join(missing) if missing else 'ok')"
)


def require_gstreamer() -> None:
    """Fail the calling test (not skip) when the GStreamer RTSP server cannot run here."""
    if not os.access(SYSTEM_PYTHON, os.X_OK):
        pytest.fail(f"{SYSTEM_PYTHON} not found: the RTSP tests need Debian's python3 with GStreamer; "
                    f"install: apt-get install python3 {DEBIAN_PACKAGES}", pytrace=False)
    res = subprocess.run([SYSTEM_PYTHON, "-c", _CHECK], capture_output=True, text=True, timeout=60)
    if res.returncode != 0 or res.stdout.strip() != "ok":
        detail = (res.stdout.strip() or res.stderr.strip().splitlines()[-1:] or ["?"])
        pytest.fail(f"GStreamer RTSP server unavailable for {SYSTEM_PYTHON} ({detail}); "
                    f"install: apt-get install {DEBIAN_PACKAGES}", pytrace=False)


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rtsp_describe(url: str, timeout: float = 5.0) -> str:
    """Send one RTSP DESCRIBE and return the status line (e.g. 'RTSP/1.0 200 OK')."""
    rest = url.split("://", 1)[1]
    hostport = rest.split("/", 1)[0]
    host, port = hostport.rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=timeout) as s:
        s.sendall(f"DESCRIBE {url} RTSP/1.0\r\nCSeq: 1\r\nAccept: application/sdp\r\n\r\n".encode())
        data = b""
        while b"\r\n" not in data:
            chunk = s.recv(4096)
            if not chunk:
                break
            data += chunk
    return data.split(b"\r\n", 1)[0].decode("latin-1")


def _kill(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.kill()
        proc.wait(5)


class RtspServer:
    """tools/rtsp_server.py serving ``files`` ({mount: mp4 path}) on 127.0.0.1 (see module doc)."""

    def __init__(self, files: dict[str, str | os.PathLike], port: int | None = None,
                 max_seconds: float = 600.0) -> None:
        self.files = {m if m.startswith("/") else "/" + m: Path(p) for m, p in files.items()}
        self.port = port
        self.max_seconds = max_seconds
        self.proc: subprocess.Popen | None = None
        self._log = tempfile.TemporaryFile(prefix="rtsp_server_")  # noqa: SIM115 - lives with self
        # stop() keeps the log (start() may follow); it is closed by close() or when self goes away
        self._close_log = weakref.finalize(self, self._log.close)
        self._finalizer: weakref.finalize | None = None
        self.paused = False

    def url(self, mount: str) -> str:
        """rtsp:// URL of a mount (the port is fixed at the first start)."""
        if self.port is None:
            raise RuntimeError("start() the server first")
        return f"rtsp://127.0.0.1:{self.port}{mount if mount.startswith('/') else '/' + mount}"

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def log_text(self) -> str:
        """What the server wrote on stderr so far."""
        self._log.seek(0)
        return self._log.read().decode("utf-8", "replace")

    def start(self, timeout: float = 30.0) -> RtspServer:
        """Start (or restart, on the same port); returns once every mount answers DESCRIBE."""
        if self.running:
            return self
        require_gstreamer()
        if self.port is None:
            self.port = free_port()
        cmd = [SYSTEM_PYTHON, str(SERVER_SCRIPT), "--port", str(self.port), "--max-seconds", str(self.max_seconds)]
        for mount, path in self.files.items():
            cmd += ["--mount", mount, str(path)]
        deadline = time.monotonic() + timeout
        while True:  # the port may still be held by the previous instance for a moment
            self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=self._log, stdin=subprocess.DEVNULL)
            self._finalizer = weakref.finalize(self, _kill, self.proc)  # also runs at exit
            if self._wait_ready(deadline):
                break
            _kill(self.proc)
            if self.proc.stdout is not None:
                self.proc.stdout.close()
            if time.monotonic() > deadline:
                raise RuntimeError(f"RTSP server did not start on port {self.port}:\n{self.log_text()[-2000:]}")
            time.sleep(0.5)
        for mount in self.files:
            while True:
                try:
                    status = rtsp_describe(self.url(mount))
                except OSError as exc:
                    status = str(exc)
                if " 200 " in status + " ":
                    break
                if time.monotonic() > deadline or not self.running:
                    self.stop()
                    raise RuntimeError(f"RTSP DESCRIBE {self.url(mount)} failed ({status}):\n{self.log_text()[-2000:]}")
                time.sleep(0.2)
        # Our DESCRIBE-only connection makes the shared media unprepare as it closes; a client
        # connecting during those few milliseconds would get a 503, so let it settle.
        time.sleep(0.3)
        return self

    def _wait_ready(self, deadline: float) -> bool:
        assert self.proc is not None and self.proc.stdout is not None
        fd = self.proc.stdout.fileno()
        buf = b""
        while time.monotonic() < deadline:
            ready, _, _ = select.select([fd], [], [], 0.2)
            if ready:
                chunk = os.read(fd, 4096)
                if not chunk:
                    return False  # exited
                buf += chunk
                if b"READY" in buf:
                    return True
            elif self.proc.poll() is not None:
                return False
        return False

    def pause(self) -> None:
        """SIGSTOP the server: it keeps its connections open and sends nothing (a frozen camera)."""
        self._signal(signal.SIGSTOP)
        self.paused = True

    def resume(self) -> None:
        """SIGCONT a paused server."""
        self._signal(signal.SIGCONT)
        self.paused = False

    def kill(self) -> None:
        """SIGKILL the server (a crash: the kernel closes its connections); start() restarts it."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)
        self.paused = False
        self.stop()

    def _signal(self, sig: int) -> None:
        if not self.running:
            raise RuntimeError("the RTSP server is not running")
        assert self.proc is not None
        os.kill(self.proc.pid, sig)

    def stop(self, timeout: float = 5.0) -> None:
        """SIGTERM (after SIGCONT if paused), then SIGKILL after ``timeout``; idempotent."""
        proc, self.proc = self.proc, None
        if proc is None:
            return
        if proc.poll() is None:
            if self.paused:
                proc.send_signal(signal.SIGCONT)
            proc.terminate()
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
        if proc.stdout is not None:
            proc.stdout.close()
        if self._finalizer is not None:
            self._finalizer.detach()
        self.paused = False

    def close(self) -> None:
        """Stop the server for good and close its log; idempotent."""
        self.stop()
        self._close_log()

    def __enter__(self) -> RtspServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()
