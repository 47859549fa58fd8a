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


class CloudBackend(Protocol):
    name: str

    def __call__(self, batch: np.ndarray, block: int) -> np.ndarray:
        """Final logits (N, classes) for a batch of split-``block`` activations."""
        ...


class OnnxCloud:
    """The cloud half on ONNX Runtime, batch axis free: an artefact's segment chain, or one
    session per split exported from a checkpoint (:func:`cloud_worker.torch_cloud.onnx_cloud`)."""

    name = "onnxruntime"

    def __init__(self, run: Callable[[np.ndarray, int], np.ndarray]) -> None:
        self._run = run

    @classmethod
    def from_sessions(cls, sessions: Mapping[int, Any]) -> OnnxCloud:
        return cls(lambda batch, block: sessions[block].run(None, {"input": batch})[0])

    @classmethod
    def from_artefact(cls, artefact: Artefact, threads: int | None = None) -> OnnxCloud:
        return cls(artefact.open_chain(threads).cloud)  # from block 0: frame offloads

    def __call__(self, batch: np.ndarray, block: int) -> np.ndarray:
        return self._run(batch, block)
