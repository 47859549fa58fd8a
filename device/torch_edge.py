"""The edge half on a PyTorch checkpoint: where torch is installed (a training machine, a test).

Eager PyTorch is the reference; ONNX Runtime runs each split's half exported once per checkpoint
and cached beside the node's other files under the model's content hash
(:mod:`shared.onnx_halves`). At start-up every exported split is checked against PyTorch on the
same input, and a backend whose outputs differ by more than ``TOLERANCE`` is refused: the exits'
confidences must mean what the bandit learnt. A device runs an artefact instead
(:mod:`device.backend`), whose graphs were checked when they were exported.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from device.onnx_edge import EdgeBackend, OnnxEdge
from shared.checkpoint import Checkpoint
from shared.onnx_halves import TOLERANCE, EdgeHalf, cached_session, choose_backend

__all__ = ["TOLERANCE", "TorchEdge", "make", "max_difference", "onnx_edge"]


class TorchEdge:
    name = "torch"

    def __init__(self, ckpt: Checkpoint) -> None:
        self.model = ckpt.model.eval()

    def __call__(self, x: np.ndarray, block: int) -> tuple[np.ndarray, list[np.ndarray]]:
        with torch.inference_mode():
            out = self.model.edge(torch.from_numpy(x), block)
        return out.activation.numpy(), [t.numpy() for t in out.logits]


def onnx_edge(ckpt: Checkpoint, cache_dir: Path, threads: int | None = None) -> OnnxEdge:
    """Every split of ``ckpt`` exported (once, cached) and opened in ONNX Runtime."""
    size = ckpt.meta.input_size
    model = ckpt.model.eval()
    example = torch.zeros(1, 3, size, size)
    return OnnxEdge.from_sessions(
        {
            block: cached_session(
                cache_dir, ckpt.hash, f"edge-{block}", EdgeHalf(model, block), example, threads
            )
            for block in ckpt.meta.arm_blocks
        }
    )


def max_difference(a: EdgeBackend, b: EdgeBackend, blocks: Sequence[int], size: int) -> float:
    x = np.random.default_rng(0).standard_normal((1, 3, size, size)).astype(np.float32)
    worst = 0.0
    for block in blocks:
        (act_a, log_a), (act_b, log_b) = a(x, block), b(x, block)
        for u, v in zip([act_a, *log_a], [act_b, *log_b], strict=True):
            worst = max(worst, float(np.abs(u - v).max()))
    return worst


def make(name: str, ckpt: Checkpoint, cache_dir: Path, threads: int | None = None) -> EdgeBackend:
    """``torch``, ``onnxruntime``, or ``auto`` (ONNX Runtime when it is installed and exact
    enough, else PyTorch, with the reason logged). ``threads`` sizes torch too."""
    if threads:
        torch.set_num_threads(threads)
    return choose_backend(
        name,
        TorchEdge(ckpt),
        lambda: onnx_edge(ckpt, cache_dir, threads),
        lambda a, b: max_difference(a, b, ckpt.meta.arm_blocks, ckpt.meta.input_size),
        "edge backend",
    )
