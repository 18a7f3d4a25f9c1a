#!/usr/bin/env bash
# Set up streamdet on a fresh Debian/Ubuntu machine (CPU) in a virtual environment: never in the
# system interpreter (Debian 12 and Ubuntu 24.04 mark it externally managed, PEP 668).
#   bash tools/setup.sh          # .venv in this checkout: torch (CPU wheel), streamdet and its light
#                                # client (editable), their dependencies, ONNX Runtime (the CPU backend
#                                # for gateways) and paho-mqtt (the MQTT bridge)
#   bash tools/setup.sh --test   # also every optional backend (OpenVINO), matplotlib for bench plots,
#                                # pytest/ruff/mypy, at the versions CI tests with (tools/constraints-test.txt),
#                                # and the Debian packages the end-to-end tests use
#                                # (GStreamer RTSP server, systemd-analyze; needs root or sudo)
#   bash tools/setup.sh --venv /opt/streamdet/venv   # a service install (docs/operations.md):
#                                # that environment, streamdet copied in (not editable)
# PYTHON=/usr/bin/python3 names the interpreter the environment is made from (default: python3).
# Missing venv support (Debian's python3-venv) is installed through apt.
set -euo pipefail
PY=${PYTHON:-python3}
VENV=.venv
test_deps=0
while [ $# -gt 0 ]; do
  case "$1" in
    --test) test_deps=1 ;;
    --venv) VENV=$(realpath -m "${2:?--venv needs a directory}"); shift ;;  # relative to where you are
    *) echo "setup.sh: unknown option '$1' (use --test, --venv DIR)" >&2; exit 2 ;;
  esac
  shift
done
cd "$(dirname "$0")/.."
command -v "$PY" >/dev/null || { echo "setup.sh: no Python interpreter '$PY' (set PYTHON=)" >&2; exit 2; }

SUDO=""; [ "$(id -u)" = 0 ] || SUDO=sudo
apt_install() {
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}

# Debian splits venv and ensurepip out of the interpreter (python3-venv / python3.X-venv).
if [ ! -x "$VENV/bin/python" ] && ! "$PY" -c 'import ensurepip, venv' 2>/dev/null; then
  ver=$("$PY" -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}")')
  echo "setup.sh: $PY has no venv support; installing python$ver-venv with apt-get"
  apt_install "python$ver-venv"
fi

if [ "$test_deps" = 1 ] && [ ! -x /usr/bin/python3 -o ! -e /usr/lib/x86_64-linux-gnu/girepository-1.0/GstRtspServer-1.0.typelib \
    -o ! -x /usr/bin/systemd-analyze -o ! -x /usr/sbin/mosquitto -o ! -x /usr/bin/chromedriver ]; then
  # Debian's own python3 runs the GStreamer RTSP test server (python3-gi); it is not our venv.
  # mosquitto: the MQTT broker the bridge tests start (never the system service); chromium and
  # chromium-driver: the live view's browser test.
  apt_install python3 python3-gi gir1.2-gst-rtsp-server-1.0 \
    gstreamer1.0-plugins-base gstreamer1.0-plugins-good gstreamer1.0-plugins-bad \
    gstreamer1.0-plugins-ugly gstreamer1.0-libav systemd mosquitto chromium chromium-driver
fi

if [ ! -x "$VENV/bin/python" ]; then
  "$PY" -m venv "$VENV"
fi
VPY="$VENV/bin/python"
"$VPY" -m pip --version >/dev/null 2>&1 || "$VPY" -m ensurepip -q

# torch first, pinned, so that no resolver pulls a multi-GB CUDA build on a CPU machine.
"$VPY" -c 'import torch' 2>/dev/null || "$VPY" -m pip install -q torch==2.13.0
# streamdet needs the light client beside it (./client, streamdet-client: not on PyPI), in the same
# pip command so that the resolver takes it from here.
if [ "$VENV" != .venv ]; then
  "$VPY" -m pip install -q ./client '.[onnxruntime,mqtt]'
elif [ "$test_deps" = 1 ]; then
  # the versions CI tests with (tools/constraints-test.txt), so a fresh clone tests what CI passed
  "$VPY" -m pip install -q -c tools/constraints-test.txt -e ./client -e '.[onnxruntime,openvino,bench,mqtt,dev]'
else
  "$VPY" -m pip install -q -e ./client -e '.[onnxruntime,mqtt]'
fi
echo "streamdet $("$VPY" -m streamdet --version | cut -d' ' -f2) is installed in $VENV ($VENV/bin/streamdet)"
