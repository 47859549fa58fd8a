"""How the node runs the edge half: ONNX Runtime on the artefact's graphs, or on a checkpoint's.

The node runs a small network at batch 1, where eager PyTorch spends most of its time in
per-operator overhead; ONNX Runtime runs the same graph several times faster (docs/benchmarks.md
has the figures for this machine). Each split's edge half is blocks 1..b and every exit on the
way, exactly ``model.edge(x, b)``.

* An **artefact** (what a device runs) carries the network as a chain of segment graphs, every
  split checked against PyTorch when it was exported: the node runs the segments up to its
  split and needs no torch at all.
* A **checkpoint** needs torch: its halves are exported once and cached by content hash, and
  checked against PyTorch at start-up (``auto`` falls back to PyTorch when they differ by more
  than the tolerance); ``device.torch_edge`` holds that path.
"""

from __future__ import annotations

from pathlib import Path

from device.onnx_edge import EdgeBackend, OnnxEdge
from shared.artefact import Artefact
from shared.model_file import ModelFile, check_backend

__all__ = ["make_backend"]


def make_backend(
    name: str, model: ModelFile, cache_dir: Path, threads: int | None = None
) -> EdgeBackend:
    """The edge half of ``model`` on ``name``: ``auto``, ``onnxruntime`` or ``torch``.

    On an artefact, ``auto`` and ``onnxruntime`` open its graphs; ``torch`` is refused (an
    artefact holds no PyTorch weights). On a checkpoint, see :func:`device.torch_edge.make`.
    """
    check_backend(name, model)
    if isinstance(model, Artefact):
        return OnnxEdge.from_artefact(model, threads)
    from device.torch_edge import make

    return make(name, model, cache_dir, threads)  # type: ignore[arg-type]
