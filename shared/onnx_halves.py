"""The two halves of a split network as ONNX graphs run by ONNX Runtime: what the node (edge
half, batch 1) and the worker (cloud half, micro-batches) share.

At the sizes a camera fleet runs, eager PyTorch spends most of its time in per-operator
overhead; ONNX Runtime runs the same graph several times faster (docs/benchmarks.md). A half is
exported once per checkpoint and split: into an artefact by ``isplitee export``
(:mod:`shared.lab.export`), or, for a node or worker given the checkpoint itself, cached under
the model's content hash and checked against PyTorch at start-up by its user (``TOLERANCE``):
the exits' confidences and the final classifier's C_L must mean what the bandit learnt. Only
this module calls the exporter.
"""

from __future__ import annotations

import logging
import os
import tempfile
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import torch

from shared.runtime import session

__all__ = [
    "OPSET",
    "TOLERANCE",
    "CloudHalf",
    "EdgeHalf",
    "cached_session",
    "choose_backend",
    "export",
    "export_bytes",
]

log = logging.getLogger(__name__)

B = TypeVar("B")

TOLERANCE = 1e-4
"""Largest difference from PyTorch's outputs accepted from another runtime."""

OPSET = 17
"""ONNX opset the halves are exported at (ONNX Runtime 1.17 and later run it)."""


class EdgeHalf(torch.nn.Module):
    """``model.edge(x, block)`` with plain tensor outputs: (activation, every exit's logits)."""

    def __init__(self, model: torch.nn.Module, block: int) -> None:
        super().__init__()
        self.model, self.block = model, block

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        out = self.model.edge(x, self.block)
        return (out.activation, *out.logits)


class CloudHalf(torch.nn.Module):
    """``model.cloud(activation, block)``: the final classifier's logits."""

    def __init__(self, model: torch.nn.Module, block: int) -> None:
        super().__init__()
        self.model, self.block = model, block

    def forward(self, activation: torch.Tensor) -> torch.Tensor:
        return self.model.cloud(activation, self.block)


def export(
    half: torch.nn.Module,
    example: torch.Tensor,
    path: Path,
    *,
    dynamic_batch: bool = False,
    output_names: list[str] | None = None,
) -> None:
    """Write ``half`` to ``path`` atomically (another process may export the same file at the
    same moment). The input is named ``input``; the outputs ``output_names``, or ``output``
    for a half with one; ``dynamic_batch`` leaves the first axis of input and outputs free."""
    tmp = path.with_suffix(f".tmp{os.getpid()}")
    names = output_names or ["output"]
    options: dict[str, Any] = dict(input_names=["input"], output_names=names)
    if dynamic_batch:
        options["dynamic_axes"] = {name: {0: "batch"} for name in ("input", *names)}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript exporter announces its successor
        # The exporter restores the module's mode afterwards, recursively: it must be in eval
        # mode already, or the caller's own model would be left in training mode.
        torch.onnx.export(
            half.eval(), (example,), str(tmp), dynamo=False, opset_version=OPSET, **options
        )
    os.replace(tmp, path)


def export_bytes(half: torch.nn.Module, example: torch.Tensor, **options: Any) -> bytes:
    """The ONNX graph :func:`export` writes, as bytes (for an artefact)."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "half.onnx"
        export(half, example, path, **options)
        return path.read_bytes()


def cached_session(
    cache_dir: Path,
    model_hash: str,
    name: str,
    half: torch.nn.Module,
    example: torch.Tensor,
    threads: int | None = None,
    *,
    dynamic_batch: bool = False,
) -> Any:
    """A session for ``half``, exported to ``<cache_dir>/<hash prefix>/<name>.onnx`` the first
    time (per checkpoint and split) and read from there afterwards."""
    where = cache_dir / model_hash[:16]
    where.mkdir(parents=True, exist_ok=True)
    path = where / f"{name}.onnx"
    if not path.exists():
        export(half, example, path, dynamic_batch=dynamic_batch)
    return session(path, threads)


def choose_backend(
    name: str,
    reference: B,
    build: Callable[[], B],
    difference: Callable[[B, B], float],
    what: str,
) -> B:
    """``torch`` (``reference``), ``onnxruntime`` (``build()``, or an error saying why not), or
    ``auto``: ONNX Runtime when it builds and ``difference(candidate, reference)`` is within
    ``TOLERANCE``, else PyTorch; ``what`` names the half in the log line that says which."""
    if name == "torch":
        return reference
    try:
        candidate = build()
        diff = difference(candidate, reference)
        if diff > TOLERANCE:
            raise RuntimeError(f"outputs differ from PyTorch's by {diff:.2e} > {TOLERANCE:g}")
    except Exception as exc:
        if name == "onnxruntime":
            raise RuntimeError(f"backend onnxruntime is not usable here: {exc}") from exc
        log.info("%s: PyTorch (ONNX Runtime not used: %s)", what, exc)
        return reference
    log.info("%s: ONNX Runtime (max difference from PyTorch %.1e)", what, diff)
    return candidate
