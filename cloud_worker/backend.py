"""How the worker runs the cloud half: ONNX Runtime on the artefact's graphs, or a checkpoint's.

The cloud half at this fleet's sizes is small, and eager PyTorch spends most of its time in
per-operator overhead; ONNX Runtime ran it 2.7-11 times faster at batch 1 and 1.9-7 times at
batch 8 here (docs/benchmarks.md, "Cloud half"), and it is most of an offload's latency. Each
split's cloud half has a free batch axis.

* An **artefact** carries the network as a chain of segment graphs, every split checked
  against PyTorch when it was exported: the worker runs the segments after each split and
  needs no torch.
* A **checkpoint** needs torch: ``cloud_worker.torch_cloud`` exports its halves once (cached by
  content hash), checks them against PyTorch at start-up on a batch of random activations, and
  keeps eager PyTorch as a backend of its own.
"""

from __future__ import annotations

from pathlib import Path

from cloud_worker.onnx_cloud import CloudBackend, OnnxCloud
from shared.artefact import Artefact
from shared.model_file import ModelFile, check_backend
from shared.protocol import FRAME_BLOCK

__all__ = ["make_cloud_backend", "split_shapes"]


def split_shapes(model: ModelFile) -> dict[int, tuple[int, ...]]:
    """Input shape (C, H, W) of the cloud half at every split a node can offload: every exit
    but the last, and block 0 (a frame offload: the model's input)."""
    size = model.meta.input_size
    shapes = {FRAME_BLOCK: (3, size, size)}
    shapes.update({b: tuple(model.profile.block(b).out_shape) for b in model.meta.exit_blocks})
    return shapes


def make_cloud_backend(
    name: str,
    model: ModelFile,
    cache_dir: Path,
    threads: int | None = None,
    shapes: dict[int, tuple[int, ...]] | None = None,
) -> CloudBackend:
    """The cloud half of ``model`` on ``name``: ``auto``, ``onnxruntime`` or ``torch``.

    On an artefact, ``auto`` and ``onnxruntime`` open its graphs; ``torch`` is refused. On a
    checkpoint, see :func:`cloud_worker.torch_cloud.make` (``shapes``: :func:`split_shapes`,
    if the caller has them).
    """
    check_backend(name, model)
    if isinstance(model, Artefact):
        return OnnxCloud.from_artefact(model, threads)
    from cloud_worker.torch_cloud import make

    return make(name, model, cache_dir, threads, shapes or split_shapes(model))  # type: ignore[arg-type]
