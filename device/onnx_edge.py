"""The edge half's interface, and the edge half on ONNX Runtime (what a device runs).

An artefact's segment chain, or one session per split exported from a checkpoint
(:func:`device.torch_edge.onnx_edge`); :mod:`device.backend` picks one.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, Protocol

import numpy as np

from shared.artefact import Artefact
from shared.runtime import NODE_OPTIONS

__all__ = ["EdgeBackend", "OnnxEdge"]


class EdgeBackend(Protocol):
    name: str

    def __call__(self, x: np.ndarray, block: int) -> tuple[np.ndarray, list[np.ndarray]]:
        """(activation, logits of every exit up to ``block``) for one preprocessed input."""
        ...


class OnnxEdge:
    """The edge half on ONNX Runtime: an artefact's segment chain, or one session per split
    exported from a checkpoint (:func:`device.torch_edge.onnx_edge`)."""

    name = "onnxruntime"

    def __init__(self, run: Callable[[np.ndarray, int], tuple[np.ndarray, list[np.ndarray]]]):
        self._run = run

    @classmethod
    def from_sessions(cls, sessions: Mapping[int, Any]) -> OnnxEdge:
        """One session per split block, outputs (activation, every exit's logits)."""
        inputs = {b: s.get_inputs()[0].name for b, s in sessions.items()}

        def run(x: np.ndarray, block: int) -> tuple[np.ndarray, list[np.ndarray]]:
            out = sessions[block].run(None, {inputs[block]: x})
            return out[0], out[1:]

        return cls(run)

    @classmethod
    def from_artefact(cls, artefact: Artefact, threads: int | None = None) -> OnnxEdge:
        return cls(artefact.open_chain(threads, **NODE_OPTIONS).edge)

    def __call__(self, x: np.ndarray, block: int) -> tuple[np.ndarray, list[np.ndarray]]:
        return self._run(x, block)
