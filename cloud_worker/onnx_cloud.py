"""The cloud half's interface, and the cloud half on ONNX Runtime, batch axis free.

An artefact's segment chain, or one session per split exported from a checkpoint
(:func:`cloud_worker.torch_cloud.onnx_cloud`); :mod:`cloud_worker.backend` picks one.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, Protocol

import numpy as np

from shared.artefact import Artefact

__all__ = ["CloudBackend", "OnnxCloud"]


Exits = Callable[[np.ndarray, int], tuple[np.ndarray, list[np.ndarray]]]


class CloudBackend(Protocol):
    name: str

    def __call__(self, batch: np.ndarray, block: int) -> np.ndarray:
        """Final logits (N, classes) for a batch of split-``block`` activations."""
        ...

    def with_exits(self, batch: np.ndarray, block: int) -> tuple[np.ndarray, list[np.ndarray]]:
        """The final logits and those of every exit after ``block``, shallowest first (an
        empty list: this backend does not give them)."""
        ...


class OnnxCloud:
    """The cloud half on ONNX Runtime, batch axis free: an artefact's segment chain, or one
    session per split exported from a checkpoint (:func:`cloud_worker.torch_cloud.onnx_cloud`)."""

    name = "onnxruntime"

    def __init__(self, run: Exits) -> None:
        self._run = run

    @classmethod
    def from_sessions(cls, sessions: Mapping[int, Any]) -> OnnxCloud:
        """One exported half per split: the final logits only (no exits)."""
        return cls(lambda batch, block: (sessions[block].run(None, {"input": batch})[0], []))

    @classmethod
    def from_artefact(cls, artefact: Artefact, threads: int | None = None) -> OnnxCloud:
        return cls(artefact.open_chain(threads).cloud_exits)  # from block 0: frame offloads

    def __call__(self, batch: np.ndarray, block: int) -> np.ndarray:
        return self._run(batch, block)[0]

    def with_exits(self, batch: np.ndarray, block: int) -> tuple[np.ndarray, list[np.ndarray]]:
        return self._run(batch, block)
