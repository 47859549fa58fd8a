"""The cloud half on a PyTorch checkpoint: where torch is installed.

Eager PyTorch is the reference and stays a backend of its own (``backend = "torch"``: on a
large batch it can beat ONNX Runtime, docs/benchmarks.md). ONNX Runtime runs each split's half
exported once per checkpoint with a free batch axis, cached under the model's hash
(:mod:`shared.onnx_halves`), and checked against PyTorch at start-up on batches of random
activations: a backend whose logits differ by more than ``TOLERANCE`` is refused, since the
node's reward needs the final classifier's confidence as PyTorch computes it.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from cloud_worker.onnx_cloud import CloudBackend, OnnxCloud
from shared.checkpoint import Checkpoint
from shared.onnx_halves import CloudHalf, cached_session, choose_backend

__all__ = ["TorchCloud", "make", "max_difference", "onnx_cloud"]


class TorchCloud:
    name = "torch"

    def __init__(self, ckpt: Checkpoint) -> None:
        self.model = ckpt.model.eval()

    def __call__(self, batch: np.ndarray, block: int) -> np.ndarray:
        with torch.inference_mode():
            return self.model.cloud(torch.from_numpy(batch), block).numpy()

    def with_exits(self, batch: np.ndarray, block: int) -> tuple[np.ndarray, list[np.ndarray]]:
        with torch.inference_mode():
            final, exits = self.model.cloud_exits(torch.from_numpy(batch), block)
            return final.numpy(), [e.numpy() for e in exits]


def onnx_cloud(
    ckpt: Checkpoint,
    shapes: dict[int, tuple[int, ...]],
    cache_dir: Path,
    threads: int | None = None,
) -> OnnxCloud:
    """Every split of ``ckpt`` exported (once, cached) with a free batch axis, opened."""
    model = ckpt.model.eval()
    return OnnxCloud.from_sessions(
        {
            # batch 2 in the example: the exporter keeps the axis free
            block: cached_session(
                cache_dir,
                ckpt.hash,
                f"cloud-{block}",
                CloudHalf(model, block),
                torch.zeros(2, *shape),
                threads,
                dynamic_batch=True,
            )
            for block, shape in shapes.items()
        }
    )


def max_difference(
    a: CloudBackend, b: CloudBackend, shapes: dict[int, tuple[int, ...]], batches: Sequence[int]
) -> float:
    rng = np.random.default_rng(0)
    worst = 0.0
    for block, shape in shapes.items():
        for n in batches:
            x = rng.standard_normal((n, *shape)).astype(np.float32)
            worst = max(worst, float(np.abs(a(x, block) - b(x, block)).max()))
    return worst


def make(
    name: str,
    ckpt: Checkpoint,
    cache_dir: Path,
    threads: int | None,
    shapes: dict[int, tuple[int, ...]],
) -> CloudBackend:
    """``torch``, ``onnxruntime``, or ``auto`` (ONNX Runtime when it is installed and within
    ``TOLERANCE`` of PyTorch at batch 1 and 5, else PyTorch, with the reason logged).
    ``threads`` sizes torch too."""
    if threads:
        torch.set_num_threads(threads)
    if name == "torch":
        return TorchCloud(ckpt)
    return choose_backend(
        name,
        TorchCloud(ckpt),
        lambda: onnx_cloud(ckpt, shapes, cache_dir, threads),
        lambda a, b: max_difference(a, b, shapes, (1, 5)),
        f"cloud backend for {ckpt.short_hash}",
    )
