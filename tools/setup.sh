#!/usr/bin/env bash
# Set up streamdet on a fresh Debian/Ubuntu machine (CPU): Python packages, and with --test the
# GStreamer RTSP server that the end-to-end tests serve streams with.
#   bash tools/setup.sh          # runtime: torch (CPU wheel), streamdet, its dependencies and ONNX Runtime
#                                # (the CPU inference backend we recommend for gateways)
#   bash tools/setup.sh --test   # also every optional backend (OpenVINO), matplotlib for bench plots,
#                                # pytest/ruff and the Debian GStreamer packages (needs root or sudo)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
test_deps=0
[ "${1:-}" = "--test" ] && test_deps=1

if [ "$test_deps" = 1 ] && [ ! -x /usr/bin/python3 -o ! -e /usr/lib/x86_64-linux-gnu/girepository-1.0/GstRtspServer-1.0.typelib \
    -o ! -x /usr/bin/systemd-analyze ]; then
  SUDO=""; [ "$(id -u)" = 0 ] || SUDO=sudo
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq --no-install-recommends python3 python3-gi gir1.2-gst-rtsp-server-1.0 \
    gstreamer1.0-plugins-base gstreamer1.0-plugins-good gstreamer1.0-plugins-bad \
    gstreamer1.0-plugins-ugly gstreamer1.0-libav systemd >/dev/null
fi

# torch first, pinned, so that no resolver pulls a multi-GB CUDA build on a CPU machine.
"$PY" -c 'import torch' 2>/dev/null || "$PY" -m pip install -q torch==2.13.0
if [ "$test_deps" = 1 ]; then
  "$PY" -m pip install -q -e '.[onnxruntime,openvino,bench,dev]'
else
  "$PY" -m pip install -q -e '.[onnxruntime]'
fi
echo "streamdet $("$PY" -m streamdet --version | cut -d' ' -f2) is installed"
