"""``isplitee-device``: the camera node (also ``python -m device``)."""

from __future__ import annotations

import argparse
import sys
import threading
from collections.abc import Sequence
from pathlib import Path

from shared.entrypoint import (
    install_stop_signals,
    load_program_config,
    report_error,
    setup_logging,
)
from shared.errors import IsplitEEError
from shared.wire import WIRE_CHOICES

__all__ = ["main"]


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="isplitee-device",
        description="The camera node: runs the model up to the split the bandit picks, answers "
        "from the exit there when it is confident, otherwise offloads the activation to a cloud "
        "worker over MQTT; publishes one result per frame. Settings come from --config, then "
        "ISPLITEE_* variables, then these flags.",
    )
    p.add_argument("--broker", help="mqtt://HOST:PORT or mqtts://HOST:PORT")
    p.add_argument(
        "--model",
        type=Path,
        help="model: its artefact (.isplitee) or, with torch, its checkpoint (.pt)",
    )
    p.add_argument("--source", help="camera index, video file, URL, image folder or picamera2")
    p.add_argument("--device-id", help="this camera's id in every topic (default: host name)")
    p.add_argument("--config", type=Path, help="device.toml (see deploy/device.example.toml)")
    p.add_argument("--max-frames", type=int, help="stop after N frames, each with its result")
    p.add_argument("--fps", type=float, help="most frames per second")
    p.add_argument(
        "--policy",
        help="isplitee (default; audited) | isplitee-nonstationary | isplitee-paper | "
        "offload-all | fixed:BLOCK | final",
    )
    p.add_argument("--alpha", type=float, help="exit threshold (default 0.8)")
    p.add_argument(
        "--encoding", choices=WIRE_CHOICES, help="activation encoding (auto: the checkpoint's)"
    )
    p.add_argument("--state", type=Path, help="bandit state file, restored at start")
    p.add_argument("--cost", choices=("measured", "paper"), help="cost model (default measured)")
    p.add_argument("--prefix", help="topic prefix (default isplitee)")
    p.add_argument("--threads", type=int, help="CPU threads for the edge half")
    p.add_argument("--metrics-port", type=int, help="serve Prometheus /metrics and /healthz")
    p.add_argument("--log-level", default="INFO", help="DEBUG, INFO, WARNING, ERROR")
    p.add_argument(
        "--check-config", action="store_true", help="print the effective settings and exit"
    )
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    setup_logging(args.log_level)
    from device.config import DeviceConfig

    keys = [
        *("broker", "model", "source", "device_id", "max_frames", "fps", "policy", "alpha"),
        *("encoding", "state", "cost", "prefix", "threads", "metrics_port"),
    ]
    flags = {k: getattr(args, k) for k in keys}
    try:
        config = load_program_config(DeviceConfig, args.config, flags, check=args.check_config)
        if config is None:
            return 0
        from device.app import DeviceApp

        app = DeviceApp(config)
        stop = threading.Event()
        install_stop_signals(stop)
        summary = app.run(stop)
    except (IsplitEEError, ValueError) as exc:
        return report_error("isplitee-device", exc)
    except KeyboardInterrupt:
        return 130
    refused = f"; {summary.refused} refused by the broker" if summary.refused else ""
    print(
        f"isplitee-device: {summary.frames} frames, {summary.results} results "
        f"({summary.edge} edge, {summary.cloud} cloud, {summary.fallback} fallback{refused})",
        file=sys.stderr,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
