"""How the node runs the edge half: ONNX Runtime where it is installed, PyTorch otherwise.

The node runs a small network at batch 1, where eager PyTorch spends most of its time in
per-operator overhead; ONNX Runtime runs the same graph several times faster (docs/benchmarks.md
has the figures for this machine). Each split's edge half (blocks 1..b and every exit on the
way, exactly ``model.edge(x, b)``) is exported once per checkpoint and cached beside the node's
other files, keyed by the model's content hash (:mod:`shared.onnx_halves`). At start-up the
node checks every exported split against PyTorch on the same input and refuses a backend whose
outputs differ by more than ``TOLERANCE``: the exits' confidences must mean what the bandit
learnt.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Protocol

import numpy as np
import torch

from shared.checkpoint import Checkpoint
from shared.onnx_halves import TOLERANCE, EdgeHalf, cached_session, choose_backend

__all__ = ["TOLERANCE", "EdgeBackend", "OnnxEdge", "TorchEdge", "make_backend"]

log = logging.getLogger(__name__)


class EdgeBackend(Protocol):
    name: str

    def __call__(self, x: np.ndarray, block: int) -> tuple[np.ndarray, list[np.ndarray]]:
        """(activation, logits of every exit up to ``block``) for one preprocessed input."""
        ...


class TorchEdge:
    name = "torch"

    def __init__(self, ckpt: Checkpoint) -> None:
        self.model = ckpt.model.eval()

    def __call__(self, x: np.ndarray, block: int) -> tuple[np.ndarray, list[np.ndarray]]:
        with torch.inference_mode():
            out = self.model.edge(torch.from_numpy(x), block)
        return out.activation.numpy(), [t.numpy() for t in out.logits]


class OnnxEdge:
    name = "onnxruntime"

    def __init__(self, ckpt: Checkpoint, cache_dir: Path, threads: int | None = None) -> None:
        self.blocks = ckpt.meta.arm_blocks
        size = ckpt.meta.input_size
        model = ckpt.model.eval()
        example = torch.zeros(1, 3, size, size)
        self._sessions = {
            block: cached_session(
                cache_dir, ckpt.hash, f"edge-{block}", EdgeHalf(model, block), example, threads
            )
            for block in self.blocks
        }
        self._input = {b: s.get_inputs()[0].name for b, s in self._sessions.items()}

    def __call__(self, x: np.ndarray, block: int) -> tuple[np.ndarray, list[np.ndarray]]:
        out = self._sessions[block].run(None, {self._input[block]: x})
        return out[0], out[1:]


def max_difference(a: EdgeBackend, b: EdgeBackend, blocks: Sequence[int], size: int) -> float:
    x = np.random.default_rng(0).standard_normal((1, 3, size, size)).astype(np.float32)
    worst = 0.0
    for block in blocks:
        (act_a, log_a), (act_b, log_b) = a(x, block), b(x, block)
        for u, v in zip([act_a, *log_a], [act_b, *log_b], strict=True):
            worst = max(worst, float(np.abs(u - v).max()))
    return worst


def make_backend(
    name: str, ckpt: Checkpoint, cache_dir: Path, threads: int | None = None
) -> EdgeBackend:
    """``torch``, ``onnxruntime``, or ``auto`` (ONNX Runtime when it is installed and exact
    enough, else PyTorch, with the reason logged)."""
    return choose_backend(
        name,
        TorchEdge(ckpt),
        lambda: OnnxEdge(ckpt, cache_dir, threads),
        lambda a, b: max_difference(a, b, ckpt.meta.arm_blocks, ckpt.meta.input_size),
        "edge backend",
    )
