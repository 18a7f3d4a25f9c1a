#!/usr/bin/env bash
# The bundled demo: make two synthetic camera clips (once), run the daemon on them with
# configs/demo.yaml, and show what a subscriber receives for a while; then stop the daemon.
#   bash tools/demo.sh [SECONDS]     (default 30)
# Runs in the virtual environment that tools/setup.sh made (.venv in this checkout).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=.venv/bin/python
[ -x "$PY" ] || { echo "demo.sh: no $PY; run 'bash tools/setup.sh' first" >&2; exit 2; }
RUN_S=${1:-30}
for spec in a:9101 b:9102; do
  name=${spec%%:*} seed=${spec##*:}
  clip=configs/demo/shapes_${name}.mp4
  [ -s "$clip" ] || "$PY" tools/make_shapes.py clip "$clip" --width 1280 --height 720 --frames 250 --seed "$seed"
done
"$PY" -m streamdet check configs/demo.yaml
LOG=${TMPDIR:-/tmp}/streamdet-demo.log
"$PY" -m streamdet run configs/demo.yaml 2>"$LOG" &
daemon=$!
trap 'kill -TERM $daemon 2>/dev/null; wait $daemon; echo "--- daemon stopped (exit $?); its log: $LOG ---"' EXIT
echo "--- daemon started (log: $LOG); waiting until it is ready (the first start exports the model to ONNX: ~30 s) ---"
for _ in $(seq 1 600); do
  grep -q "streamdet.supervisor: ready" "$LOG" && break
  kill -0 $daemon 2>/dev/null || { echo "the daemon exited; its log:"; tail -20 "$LOG"; exit 1; }
  sleep 0.5
done
web=$(grep -o "live view on http://[^ ]*" "$LOG" | tail -1 | cut -d' ' -f4 || true)
if [ -n "$web" ]; then
  echo "--- live view: open $web in a browser while the demo runs ---"
else
  echo "--- no live view (see 'live view' in $LOG) ---"
fi
echo "--- 'streamdet subscribe --summary' for ${RUN_S} s (Ctrl-C to stop) ---"
timeout --foreground "$RUN_S" "$PY" -m streamdet subscribe --summary --timeout 120 || true
