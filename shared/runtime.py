"""ONNX Runtime sessions: how the node's edge half and the worker's cloud half are run.

No torch here: a node or a worker on an exported artefact opens its graphs with these, and so
does one on a checkpoint once its halves are exported (:mod:`shared.onnx_halves`).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

__all__ = ["NODE_OPTIONS", "default_cache_dir", "session"]

NODE_OPTIONS = {"enable_cpu_mem_arena": False}
"""How a node opens its edge graphs. ONNX Runtime's arena keeps every session's largest
intermediate tensors allocated between frames: at 224 px about 24 MB of a node's memory for
seven segment sessions, against a few percent of speed on the shallowest split. Without it the
tensors come from malloc, which must hand large ones back (:func:`shared.memory.
map_large_buffers`). A worker keeps the arena: it has the memory, and batches."""


def default_cache_dir() -> Path:
    """Where halves exported from a checkpoint are kept: systemd's ``CacheDirectory=`` when
    the program runs as a service (a hardened unit cannot write to a home directory), else
    ``$XDG_CACHE_HOME/isplitee/onnx`` or ``~/.cache/isplitee/onnx``."""
    if os.environ.get("CACHE_DIRECTORY"):
        return Path(os.environ["CACHE_DIRECTORY"].split(":")[0]) / "onnx"
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "isplitee" / "onnx"


def session(source: Path | bytes, threads: int | None = None, **options: Any) -> Any:
    """An ONNX Runtime CPU session for a graph file or its bytes (``threads``: intra-op
    threads, default ONNX Runtime's own: one per physical core), fully optimised, one
    inter-op thread; ``options`` are set on its ``SessionOptions`` (e.g.
    ``enable_profiling=True`` for the benchmarks, ``enable_cpu_mem_arena=False`` for a node:
    see :data:`NODE_OPTIONS`)."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads or 0
    opts.inter_op_num_threads = 1
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    for key, value in options.items():
        setattr(opts, key, value)
    model = source if isinstance(source, bytes) else str(source)
    return ort.InferenceSession(model, opts, providers=["CPUExecutionProvider"])
