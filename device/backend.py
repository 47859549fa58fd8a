"""How the node runs the edge half: ONNX Runtime where it is installed, PyTorch otherwise.

The node runs a small network at batch 1, where eager PyTorch spends most of its time in
per-operator overhead; ONNX Runtime runs the same graph several times faster (docs/benchmarks.md
has the figures for this machine). Each split's edge half (blocks 1..b and every exit on the
way, exactly ``model.edge(x, b)``) is exported once per checkpoint and cached beside the node's
other files, keyed by the model's content hash. At start-up the node checks every exported
split against PyTorch on the same input and refuses a backend whose outputs differ by more than
``TOLERANCE``: the exits' confidences must mean what the bandit learnt.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Protocol

import numpy as np
import torch

from shared.checkpoint import Checkpoint

__all__ = ["TOLERANCE", "EdgeBackend", "OnnxEdge", "TorchEdge", "make_backend"]

log = logging.getLogger(__name__)

TOLERANCE = 1e-4
"""Largest difference from PyTorch's outputs (activation and every exit's logits) accepted."""


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


class _EdgeHalf(torch.nn.Module):
    """``model.edge(x, block)`` as a module with plain tensor outputs, for the exporter."""

    def __init__(self, model: torch.nn.Module, block: int) -> None:
        super().__init__()
        self.model, self.block = model, block

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        out = self.model.edge(x, self.block)
        return (out.activation, *out.logits)


class OnnxEdge:
    name = "onnxruntime"

    def __init__(self, ckpt: Checkpoint, cache_dir: Path, threads: int | None = None) -> None:
        import onnxruntime as ort

        self.blocks = ckpt.meta.arm_blocks
        size = ckpt.meta.input_size
        where = cache_dir / ckpt.hash[:16]
        where.mkdir(parents=True, exist_ok=True)
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads or torch.get_num_threads()
        opts.inter_op_num_threads = 1
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        self._sessions = {}
        example = torch.zeros(1, 3, size, size)
        for block in self.blocks:
            path = where / f"edge-{block}.onnx"
            if not path.exists():
                _export(ckpt.model.eval(), block, example, path)
            self._sessions[block] = ort.InferenceSession(
                str(path), opts, providers=["CPUExecutionProvider"]
            )
        self._input = {b: s.get_inputs()[0].name for b, s in self._sessions.items()}

    def __call__(self, x: np.ndarray, block: int) -> tuple[np.ndarray, list[np.ndarray]]:
        out = self._sessions[block].run(None, {self._input[block]: x})
        return out[0], out[1:]


def _export(model: torch.nn.Module, block: int, example: torch.Tensor, path: Path) -> None:
    import warnings

    tmp = path.with_suffix(f".tmp{os.getpid()}")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript exporter announces its successor
        # The exporter restores the wrapper's mode afterwards, recursively: it must be eval
        # already, or the node's own model would be left in training mode.
        half = _EdgeHalf(model, block).eval()
        torch.onnx.export(half, (example,), str(tmp), dynamo=False, opset_version=17)
    os.replace(tmp, path)  # another node process may export the same file at the same time


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
    reference = TorchEdge(ckpt)
    if name == "torch":
        return reference
    try:
        candidate = OnnxEdge(ckpt, cache_dir, threads)
        diff = max_difference(candidate, reference, ckpt.meta.arm_blocks, ckpt.meta.input_size)
        if diff > TOLERANCE:
            raise RuntimeError(f"outputs differ from PyTorch's by {diff:.2e} > {TOLERANCE:g}")
    except Exception as exc:
        if name == "onnxruntime":
            raise RuntimeError(f"backend onnxruntime is not usable here: {exc}") from exc
        log.info("edge backend: PyTorch (ONNX Runtime not used: %s)", exc)
        return reference
    log.info("edge backend: ONNX Runtime (max difference from PyTorch %.1e)", diff)
    return candidate
