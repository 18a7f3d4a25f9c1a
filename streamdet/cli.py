"""Command-line interface: a thin argparse layer over functions that tests call directly.

Exit codes: 0 ok, 1 runtime failure, 2 bad usage or bad configuration. Heavy modules (torch,
av, zmq) are imported only by the subcommand that needs them, so ``streamdet subscribe`` and
``streamdet check`` start fast.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING

from streamdet._version import __version__
from streamdet.errors import ConfigError, StreamdetError

if TYPE_CHECKING:
    from streamdet.pipeline.settings import InferenceOptions

EXIT_OK, EXIT_FAILURE, EXIT_USAGE = 0, 1, 2
DEFAULT_ENDPOINT = "tcp://127.0.0.1:5555"


def _cmd_detect(args: argparse.Namespace) -> int:
    from streamdet.detect import run_detect
    from streamdet.detector import Detector

    options = _inference_options(args, args.device, conf=args.conf, iou=args.iou, classes=args.classes,
                                 max_det=args.max_det)
    detector = Detector.from_options(options)
    run_detect(detector, args.sources, batch_size=args.batch)
    return EXIT_OK


def _inference_options(args: argparse.Namespace, device: str, *, conf: float, iou: float,
                       classes: Sequence[int] | None = None, max_det: int = 300) -> InferenceOptions:
    """The model options of ``detect`` and ``val`` (the arguments of ``_add_model_args``)."""
    from streamdet.pipeline.settings import InferenceOptions, NmsSettings

    return InferenceOptions(args.weights, device=device, img_size=args.img_size, half=args.half, backend=args.backend,
                            nms=NmsSettings.of(conf, iou, classes, max_det))


def _cmd_check(args: argparse.Namespace) -> int:
    from streamdet.config import load_config, summarize
    from streamdet.model.checkpoint import read_checkpoint
    from streamdet.model.input_size import choose_img_size
    from streamdet.pipeline.backends import BACKENDS, available_backends
    from streamdet.preflight import (
        device_problems,
        preprocess_plan,
        probe_file_cameras,
        ring_bytes,
        shm_problem,
        visible_gpus,
    )
    from streamdet.supervisor.devices import resolve_devices
    from streamdet.transport.keys import check_curve

    config = load_config(args.config)
    try:
        ckpt = read_checkpoint(config.model.weights)
    except StreamdetError as exc:
        raise ConfigError(f"model.weights: {exc}") from exc
    gpus = visible_gpus()
    devices = resolve_devices(tuple(config.devices), gpus)
    backends: dict[str, str] = {}
    for device in devices:
        name: str = config.model.backend
        if name == "auto":
            installed = available_backends(device)
            name = installed[0] if installed else "none installed"
        elif not BACKENDS.available(name):
            try:
                BACKENDS.resolve(name)  # raises ImplementationUnavailable, naming the pip extra
            except StreamdetError as exc:
                raise ConfigError(f"model.backend: {exc}") from exc
        backends[device] = name
    from streamdet.bridge.check import mqtt_problems

    preprocess, preprocess_problems = preprocess_plan(config.model.preprocess, backends)
    problems = device_problems(devices, gpus) + preprocess_problems + check_curve(config) + mqtt_problems(config)
    shm = shm_problem(config)  # rings that do not fit kill their processes with SIGBUS later
    if shm:
        problems.append(shm)
    if problems:
        raise ConfigError("; ".join(problems))
    input_size = choose_img_size(config.model.img_size, ckpt.trained_img_size)
    print(summarize(config))
    print(f"shared memory: {ring_bytes(config) / 2**20:.0f} MiB of frame rings")
    if not args.no_probe:
        for probe in probe_file_cameras(config):
            print(probe.line())
    print(f"model input: {input_size.describe()}")
    if input_size.warning:
        print(f"warning: {input_size.warning}")
    if devices != tuple(config.devices):
        print(f"devices: auto -> {', '.join(devices)} ({gpus} GPU(s) visible)")
    print("inference: " + ", ".join(f"{device} -> {name}" for device, name in backends.items()))
    print("preprocess: " + ", ".join(f"{device} -> {how}" for device, how in preprocess.items()))
    print(f"model: {ckpt.nc} classes ({', '.join(ckpt.names[:10])}{', ...' if ckpt.nc > 10 else ''})")
    print("configuration OK")
    return EXIT_OK


def _cmd_run(args: argparse.Namespace) -> int:
    from streamdet.config import load_config
    from streamdet.logs import setup_logging
    from streamdet.supervisor import run

    config = load_config(args.config)
    setup_logging(config.log_level, "streamdet")
    return run(config, args.config)


def _cmd_reload(args: argparse.Namespace) -> int:
    from pathlib import Path

    from streamdet.supervisor.runtime import send_reload

    pid = send_reload(Path(args.runtime_dir) if args.runtime_dir else None)
    print(f"sent SIGHUP to streamdet (pid {pid}); the result is in its log")
    return EXIT_OK


def _cmd_subscribe(args: argparse.Namespace) -> int:
    from streamdet.client.subscriber import subscribe_main

    if (args.server_key is None) != (args.client_key is None):
        print("streamdet subscribe: --server-key and --client-key go together (CURVE needs both)", file=sys.stderr)
        return EXIT_USAGE
    return subscribe_main(
        args.endpoint, args.camera or None, stats=args.stats, count=args.count, timeout=args.timeout,
        summary=args.summary, server_key=args.server_key, client_key=args.client_key,
    )


def _cmd_bridge_mqtt(args: argparse.Namespace) -> int:
    from streamdet.logs import setup_logging
    from streamdet_client.mqtt.cli import run_from_args, settings_from_args

    try:
        settings_from_args(args)  # bad options are usage errors (exit 2), found before anything starts
    except StreamdetError as exc:
        print(f"streamdet bridge mqtt: {exc}", file=sys.stderr)
        return EXIT_USAGE
    setup_logging(args.log_level, "streamdet-bridge")
    return run_from_args(args)


def _cmd_keygen(args: argparse.Namespace) -> int:
    from streamdet.transport.keys import keygen_main

    return keygen_main(args.dir, args.name, force=args.force, public_dir=args.public_dir)


def _cmd_val(args: argparse.Namespace) -> int:
    from streamdet.val import VAL_NMS, val_main
    from streamdet.val_distributed import DevicesError, parse_devices

    data = [*args.clips, *([args.data] if args.data else [])]
    if args.track:
        return _cmd_val_track(args, data)
    if args.detect_every is not None:
        print("streamdet val: --detect-every needs --track", file=sys.stderr)
        return EXIT_USAGE
    if len(data) != 1:
        print("streamdet val: give one data set (--data DIR or a clip); several clips need --track", file=sys.stderr)
        return EXIT_USAGE
    try:
        # the device is val's choice (--device, --devices, or torchrun's ranks): "cpu" is a placeholder here
        options = _inference_options(args, "cpu", conf=VAL_NMS.conf_thres if args.conf is None else args.conf,
                                     iou=VAL_NMS.iou_thres if args.iou is None else args.iou)
        return val_main(options, data[0], device=args.device,
                        devices=parse_devices(args.devices) if args.devices is not None else None,
                        batch_size=args.batch, as_json=args.json)
    except DevicesError as exc:
        print(f"streamdet val: {exc}", file=sys.stderr)
        return EXIT_USAGE


def _cmd_val_track(args: argparse.Namespace, clips: list[str]) -> int:
    from streamdet.val_track import TRACK_CONF, TRACK_IOU, parse_detect_every, val_track_main

    if args.devices is not None:
        print("streamdet val: --track runs on one device (--device); --devices is for mAP only", file=sys.stderr)
        return EXIT_USAGE
    if not clips:
        print("streamdet val: --track needs at least one clip (or folder of clips)", file=sys.stderr)
        return EXIT_USAGE
    try:
        every = parse_detect_every(args.detect_every) if args.detect_every is not None else (1,)
    except ValueError as exc:
        print(f"streamdet val: {exc}", file=sys.stderr)
        return EXIT_USAGE
    options = _inference_options(args, args.device or "cpu", conf=TRACK_CONF if args.conf is None else args.conf,
                                 iou=TRACK_IOU if args.iou is None else args.iou)
    return val_track_main(options, clips, as_json=args.json, detect_every=every, batch_size=args.batch)


def _cmd_bench(args: argparse.Namespace) -> int:
    from streamdet.bench.options import settings_from_args
    from streamdet.bench.runner import bench_main

    return bench_main(settings_from_args(args))


def _add_model_args(p: argparse.ArgumentParser, conf: float | str, iou: float | str) -> None:
    """The model options; a ``conf``/``iou`` given as text is a help note, the option's default None."""
    p.add_argument("--weights", required=True, help="YOLOv5 .pt checkpoint (Ultralytics format)")
    p.add_argument("--device", default="cpu", help="cpu or cuda:N (default: cpu)")
    p.add_argument("--img-size", type=int, default=640, help="model input long side (default: 640)")
    p.add_argument("--half", action="store_true", help="FP16 inference (CUDA only)")
    p.add_argument("--conf", type=float, default=None if isinstance(conf, str) else conf,
                   help=f"confidence threshold (default: {conf})")
    p.add_argument("--iou", type=float, default=None if isinstance(iou, str) else iou,
                   help=f"NMS IoU threshold (default: {iou})")
    p.add_argument("--batch", type=int, default=8, help="frames per batch (default: 8)")
    p.add_argument("--backend", default="auto", choices=["auto", "torch", "onnxruntime", "openvino"],
                   help="inference backend, as model.backend in the daemon's configuration (default: auto)")


def build_parser() -> argparse.ArgumentParser:
    """The full argument parser (exposed for tests and documentation)."""
    parser = argparse.ArgumentParser(
        prog="streamdet",
        description="Real-time YOLOv5 object detection on video streams, published over ZeroMQ.",
    )
    parser.add_argument("--version", action="version", version=f"streamdet {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    p = sub.add_parser("run", help="run the daemon on a cameras.yaml")
    p.add_argument("config", help="configuration file (YAML)")
    p.set_defaults(func=_cmd_run)

    p = sub.add_parser("check", help="validate a configuration file and print a summary")
    p.add_argument("config", help="configuration file (YAML)")
    p.add_argument("--no-probe", action="store_true", help="do not open the file cameras to read their first frame")
    p.set_defaults(func=_cmd_check)

    p = sub.add_parser("reload", help="make the running daemon re-read its configuration (as SIGHUP does)")
    p.add_argument("--runtime-dir", help="the daemon's runtime directory (default: $RUNTIME_DIRECTORY, "
                   "else $XDG_RUNTIME_DIR/streamdet, else /tmp/streamdet-UID)")
    p.set_defaults(func=_cmd_reload)

    p = sub.add_parser("subscribe", help="print published detections as JSON lines, or a per-camera summary")
    p.add_argument("--endpoint", default=DEFAULT_ENDPOINT, help=f"publisher endpoint (default: {DEFAULT_ENDPOINT})")
    p.add_argument("--camera", action="append", metavar="ID", help="only this camera (repeatable)")
    p.add_argument("--stats", action="store_true", help="also print the periodic stats messages")
    p.add_argument("--summary", action="store_true",
                   help="instead of JSON, one line per camera per stats interval: fps, p50/p99 latency, objects per "
                        "frame, drops by reason, decoder state and its last error (reads the stats only; implies "
                        "--stats)")
    p.add_argument("--count", type=int, help="exit after this many messages (with --summary: stats messages)")
    p.add_argument("--timeout", type=float,
                   help="exit with status 1 if nothing is printed for this many seconds (no message; with --summary, "
                        "no stats for the cameras shown)")
    p.add_argument("--server-key", metavar="PATH", help="CURVE: the daemon's public key file (NAME.key)")
    p.add_argument("--client-key", metavar="PATH", help="CURVE: this client's secret key file (NAME.key_secret)")
    p.set_defaults(func=_cmd_subscribe)

    from streamdet_client.mqtt.cli import add_arguments as add_mqtt_arguments

    p = sub.add_parser("bridge", help="forward a daemon's detections into a message broker (mqtt)")
    kinds = p.add_subparsers(dest="bridge", metavar="KIND", required=True)
    p = kinds.add_parser("mqtt", help="into an MQTT broker (topics in docs/wire.md; needs streamdet[mqtt])",
                         description="Subscribe to a streamdet daemon (Curve keys as `subscribe` takes them) and "
                         "publish its detections, camera states and stats into an MQTT broker until SIGTERM/Ctrl-C.")
    add_mqtt_arguments(p)
    p.set_defaults(func=_cmd_bridge_mqtt)

    p = sub.add_parser("keygen", help="create a CURVE key pair: DIR/NAME.key (public), DIR/NAME.key_secret")
    p.add_argument("dir", metavar="DIR", help="folder for the key files (created if missing)")
    p.add_argument("name", metavar="NAME", help="key name, e.g. server or a client's name")
    p.add_argument("--public-dir", metavar="PUBDIR",
                   help="write the public NAME.key here instead of DIR (e.g. the server's authorized_keys folder); "
                        "the secret NAME.key_secret still goes to DIR")
    p.add_argument("--force", action="store_true", help="replace existing key files")
    p.set_defaults(func=_cmd_keygen)

    p = sub.add_parser("detect", help="detect objects in image and video files (JSON lines)")
    _add_model_args(p, conf=0.25, iou=0.45)
    p.add_argument("--max-det", type=int, default=300, help="maximum detections per frame (default: 300)")
    p.add_argument("--classes", type=int, nargs="+", help="keep only these class ids")
    p.add_argument("sources", nargs="+", metavar="SOURCE", help="image or video files, or directories")
    p.set_defaults(func=_cmd_detect)

    p = sub.add_parser("val", help="measure mAP on a YOLO-layout data set or a clip with ground truth; "
                       "with --track, tracking accuracy (MOTA, IDF1) on clips with object ids")
    _add_model_args(p, conf="0.001; with --track 0.25, the daemon's", iou="0.6; with --track 0.45, the daemon's")
    p.add_argument("clips", nargs="*", metavar="DATA", help="as --data; with --track, any number of clips or folders")
    p.add_argument("--data", help="YOLO-layout folder, or a .mp4 clip with its .jsonl beside it")
    p.add_argument("--track", action="store_true",
                   help="score the daemon's tracking (tracking: defaults) on clips whose ground truth has ids")
    p.add_argument("--detect-every", metavar="LIST", help="with --track: detect_every values to score, e.g. 1,2,3 "
                   "(default: 1)")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.add_argument("--devices", metavar="LIST",
                   help="comma-separated devices, e.g. cuda:0,cuda:1: one process per device over torch.distributed "
                        "(gloo; NCCL when all are GPUs), same result as one device; under torchrun, the device "
                        "of each LOCAL_RANK (default there: cuda:LOCAL_RANK)")
    p.set_defaults(func=_cmd_val, device=None)  # None: cpu, or under torchrun cuda:LOCAL_RANK

    from streamdet.bench.options import DESCRIPTION as BENCH_DESCRIPTION
    from streamdet.bench.options import add_arguments as add_bench_arguments

    p = sub.add_parser("bench", help="benchmark the daemon against a naive detection loop on the same clips",
                       description=BENCH_DESCRIPTION)
    add_bench_arguments(p)
    p.set_defaults(func=_cmd_bench)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``streamdet`` console script; returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return EXIT_USAGE
    try:
        return args.func(args)
    except ConfigError as exc:
        print(f"streamdet: configuration error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except StreamdetError as exc:
        print(f"streamdet: error: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    except (ValueError, OSError) as exc:
        print(f"streamdet: error: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    except KeyboardInterrupt:
        return EXIT_OK
    except BrokenPipeError:
        return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
