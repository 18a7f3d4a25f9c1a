#!/usr/bin/env bash
# The bundled demo: make two synthetic camera clips (once), run the daemon on them with
# configs/demo.yaml, and show what a subscriber receives for a while; then stop the daemon.
#   bash tools/demo.sh [SECONDS]     (default 30)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
RUN_S=${1:-30}
for spec in a:9101 b:9102; do
  name=${spec%%:*} seed=${spec##*:}
  clip=configs/demo/shapes_${name}.mp4
  [ -s "$clip" ] || "$PY" tools/make_shapes.py clip "$clip" --width 1280 --height 720 --frames 250 --seed "$seed"
done
"$PY" -m streamdet check configs/demo.yaml
"$PY" -m streamdet run configs/demo.yaml &
daemon=$!
trap 'kill -TERM $daemon 2>/dev/null; wait $daemon' EXIT
echo "--- detections received by 'streamdet subscribe' for ${RUN_S} s (Ctrl-C to stop) ---"
timeout --foreground "$RUN_S" "$PY" -m streamdet subscribe --stats --timeout 120 | "$PY" -c '
import json, sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("type") == "stats":
        cams = ", ".join(f"{c}: {s[\"fps\"]} fps, p50 latency {s[\"latency_ms\"][\"p50\"]} ms, {s[\"dropped\"]} dropped"
                         for c, s in m["cameras"].items())
        print(f"[stats] {cams}", flush=True)
        continue
    objs = " ".join(f"{d[\"label\"]}({d[\"score\"]:.2f})" for d in m["detections"])
    print(f"{m[\"camera\"]:>9} frame {m[\"frame\"]:4d} seq {m[\"seq\"]:4d}: {len(m[\"detections\"])} objects {objs}",
          flush=True)
' || true
