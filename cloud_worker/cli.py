"""``isplitee-cloud``: the cloud worker service (also ``python -m cloud_worker``)."""

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

__all__ = ["main"]


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="isplitee-cloud",
        description="Finish the network for camera nodes: take split activations from the "
        "broker's shared subscription, run the cloud half in micro-batches, reply to each node. "
        "Settings come from --config, then ISPLITEE_* variables, then these flags.",
    )
    p.add_argument("--broker", help="mqtt://HOST:PORT or mqtts://HOST:PORT")
    p.add_argument(
        "--model",
        action="append",
        type=Path,
        dest="models",
        help="model: artefact (.isplitee) or, with torch, checkpoint; repeat to serve several",
    )
    p.add_argument("--config", type=Path, help="cloud.toml (see deploy/cloud.example.toml)")
    p.add_argument("--worker-id", help="name of this worker (default: host-pid)")
    p.add_argument("--group", help="shared-subscription group (default isplitee)")
    p.add_argument("--prefix", help="topic prefix (default isplitee)")
    p.add_argument("--metrics-port", type=int, help="serve /metrics and /healthz on this port")
    p.add_argument("--max-batch", type=int, help="most activations per batch (default 16)")
    p.add_argument("--max-wait-ms", type=float, help="longest wait to fill a batch (default 0)")
    p.add_argument("--threads", type=int, help="CPU threads for the cloud half")
    p.add_argument("--log-level", default="INFO", help="DEBUG, INFO, WARNING, ERROR")
    p.add_argument(
        "--check-config", action="store_true", help="print the effective settings and exit"
    )
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    setup_logging(args.log_level)
    from cloud_worker.config import WorkerConfig

    flags = {
        "broker": args.broker,
        "models": args.models,
        "worker_id": args.worker_id,
        "group": args.group,
        "prefix": args.prefix,
        "metrics_port": args.metrics_port,
        "max_batch": args.max_batch,
        "max_wait_ms": args.max_wait_ms,
        "threads": args.threads,
    }
    try:
        config = load_program_config(WorkerConfig, args.config, flags, check=args.check_config)
        if config is None:
            return 0
        from cloud_worker.service import Worker

        worker = Worker(config)
        stop = threading.Event()
        install_stop_signals(stop)
        worker.start()
    except (IsplitEEError, ValueError) as exc:
        return report_error("isplitee-cloud", exc)
    try:
        worker.run(stop)
    except KeyboardInterrupt:
        pass
    finally:
        worker.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
