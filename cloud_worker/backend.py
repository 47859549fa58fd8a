"""How the worker runs the cloud half: ONNX Runtime where it is installed, PyTorch otherwise.

The cloud half at this fleet's sizes is small, and eager PyTorch spends most of its time in
per-operator overhead; ONNX Runtime ran it 2.7-11 times faster at batch 1 and 1.9-7 times at
batch 8 here (docs/benchmarks.md, "Cloud half"), and it is most of an offload's latency. Each
split's cloud half is exported once per checkpoint with a free batch axis, cached under the
model's hash (:mod:`shared.onnx_halves`), and checked against PyTorch at start-up on a batch of
random activations: a backend whose logits differ by more than ``TOLERANCE`` is refused, since
the node's reward needs the final classifier's confidence as PyTorch computes it.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Protocol

import numpy as np
import torch

from shared.checkpoint import Checkpoint
from shared.onnx_halves import CloudHalf, cached_session, choose_backend
from shared.profile import profile_model

__all__ = ["CloudBackend", "OnnxCloud", "TorchCloud", "make_cloud_backend"]

log = logging.getLogger(__name__)


class CloudBackend(Protocol):
    name: str

    def __call__(self, batch: np.ndarray, block: int) -> np.ndarray:
        """Final logits (N, classes) for a batch of split-``block`` activations."""
        ...


class TorchCloud:
    name = "torch"

    def __init__(self, ckpt: Checkpoint) -> None:
        self.model = ckpt.model.eval()

    def __call__(self, batch: np.ndarray, block: int) -> np.ndarray:
        with torch.inference_mode():
            return self.model.cloud(torch.from_numpy(batch), block).numpy()


class OnnxCloud:
    name = "onnxruntime"

    def __init__(
        self,
        ckpt: Checkpoint,
        shapes: dict[int, tuple[int, ...]],
        cache_dir: Path,
        threads: int | None = None,
    ) -> None:
        model = ckpt.model.eval()
        self._sessions = {
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

    def __call__(self, batch: np.ndarray, block: int) -> np.ndarray:
        return self._sessions[block].run(None, {"input": batch})[0]


def split_shapes(ckpt: Checkpoint) -> dict[int, tuple[int, ...]]:
    """Activation shape (C, H, W) at every split a node can offload (every exit but the last)."""
    prof = profile_model(ckpt.model, ckpt.meta.input_size)
    return {b: tuple(prof.block(b).out_shape) for b in ckpt.meta.arm_blocks[:-1]}


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


def make_cloud_backend(
    name: str,
    ckpt: Checkpoint,
    cache_dir: Path,
    threads: int | None = None,
    shapes: dict[int, tuple[int, ...]] | None = None,
) -> CloudBackend:
    """``torch``, ``onnxruntime``, or ``auto`` (ONNX Runtime when it is installed and within
    ``TOLERANCE`` of PyTorch at batch 1 and 5, else PyTorch, with the reason logged).
    ``shapes``: :func:`split_shapes` of ``ckpt``, if the caller has them."""
    if name == "torch":
        return TorchCloud(ckpt)
    shapes = shapes or split_shapes(ckpt)
    return choose_backend(
        name,
        TorchCloud(ckpt),
        lambda: OnnxCloud(ckpt, shapes, cache_dir, threads),
        lambda a, b: max_difference(a, b, shapes, (1, 5)),
        f"cloud backend for {ckpt.short_hash}",
    )
