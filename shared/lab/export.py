"""Checkpoint to deploy artefact: export every segment's graph and check every split.

A node's exits and a worker's C_L must mean what the bandit learnt, so nothing goes into an
artefact unchecked: at every split, the edge half (the chain of segments up to it, as the node
runs it) takes every held-out image at batch 1 and the cloud half (the chain after it) the
PyTorch activations of the same images as one batch, and both must give PyTorch's outputs
within ``TOLERANCE`` and the same predictions. A split that fails is named and nothing is
written. The artefact's format is :mod:`shared.artefact`.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from shared.artefact import (
    CHECK_IMAGES,
    SUFFIX,
    ArtefactError,
    Chain,
    graph_names,
    segments,
    write_artefact,
)
from shared.checkpoint import Checkpoint
from shared.onnx_halves import OPSET, TOLERANCE, export_bytes
from shared.runtime import session
from shared.transforms import normalize

__all__ = ["ExportError", "GraphCheck", "export_artefact", "held_out", "write_deploy_artefact"]


class ExportError(ArtefactError):
    """A graph disagrees with PyTorch, or the held-out images cannot be had; nothing written."""


@dataclass(frozen=True)
class GraphCheck:
    name: str
    block: int
    max_difference: float
    """Largest absolute difference from PyTorch over every output and image."""
    flips: int
    """Images (times outputs) whose arg max differs from PyTorch's."""

    @property
    def ok(self) -> bool:
        return self.max_difference <= TOLERANCE and self.flips == 0


def held_out(ckpt: Checkpoint, limit: int = CHECK_IMAGES) -> torch.Tensor:
    """The first ``limit`` test images of the checkpoint's own split, normalised as it was
    trained: images it never saw, the same on every run."""
    from shared.lab.datasets import load_dataset

    meta = ckpt.meta
    if not meta.dataset:
        raise ExportError(
            f"{ckpt.path}: the checkpoint does not say which dataset it was trained on, so "
            "there are no held-out images to check the export on"
        )
    test = load_dataset(meta.dataset, meta.input_size, meta.split_seed).test
    images = torch.stack([test[i][0] for i in range(min(limit, len(test)))])
    return normalize(images, meta.mean, meta.std)


class Segment(torch.nn.Module):
    """Blocks ``first``..``last`` and the arm after ``last``: (activation, logits)."""

    def __init__(self, model: torch.nn.Module, first: int, last: int) -> None:
        super().__init__()
        self.model, self.first, self.last = model, first, last

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        for b in range(self.first, self.last + 1):
            x = self.model.features[b - 1](x)
        if str(self.last) in self.model.exits:
            return x, self.model.exits[str(self.last)](x)
        return x, self.model._final(x)


def _graph(ckpt: Checkpoint, name: str, example: torch.Tensor) -> bytes:
    """One segment's ONNX bytes (the tests replace this to make a split disagree)."""
    _, first, last = name.split("-")
    segment = Segment(ckpt.model, int(first), int(last))
    return export_bytes(segment, example, dynamic_batch=True, output_names=["activation", "logits"])


def _compare(got: list[np.ndarray], want: list[np.ndarray], logits_from: int) -> tuple[float, int]:
    diff = max(float(np.abs(g - w).max()) for g, w in zip(got, want, strict=True))
    flips = sum(
        int((g.argmax(-1) != w.argmax(-1)).sum())
        for g, w in zip(got[logits_from:], want[logits_from:], strict=True)
    )
    return diff, flips


def _check_edge(ckpt: Checkpoint, chain: Chain, block: int, x: torch.Tensor) -> tuple[float, int]:
    """The node's half at ``block``, one image at a time as the node runs it."""
    with torch.inference_mode():
        ref = ckpt.model.edge(x, block)
    want = [ref.activation.numpy(), *(t.numpy() for t in ref.logits)]
    runs = [chain.edge(x[i : i + 1].numpy(), block) for i in range(len(x))]
    got = [np.concatenate([r[0] for r in runs])]
    got += [np.concatenate([r[1][j] for r in runs]) for j in range(len(want) - 1)]
    return _compare(got, want, logits_from=1)


def _check_cloud(ckpt: Checkpoint, chain: Chain, block: int, x: torch.Tensor) -> tuple[float, int]:
    """The worker's half at ``block``, every image's activation in one batch."""
    with torch.inference_mode():
        acts = ckpt.model.edge(x, block).activation
        want = ckpt.model.cloud(acts, block).numpy()
    return _compare([chain.cloud(acts.numpy(), block)], [want], logits_from=0)


def export_artefact(
    ckpt: Checkpoint,
    out: str | Path,
    *,
    images: torch.Tensor | None = None,
    progress: Callable[[str], None] | None = None,
) -> list[GraphCheck]:
    """Export every graph of ``ckpt``, check each on ``images`` (normalised model inputs;
    default :func:`held_out`), and write the artefact to ``out``.

    Raises:
        ExportError: a graph differs from PyTorch by more than ``TOLERANCE`` or changes a
            prediction (each such graph is named); ``out`` is not written.
    """
    x = held_out(ckpt) if images is None else images
    meta = ckpt.meta
    ckpt.model.eval()
    graphs: dict[str, bytes] = {}
    inputs = torch.zeros(2, 3, meta.input_size, meta.input_size)  # batch 2: the axis stays free
    with torch.inference_mode():
        for (first, last), name in zip(segments(meta), graph_names(meta), strict=True):
            graphs[name] = _graph(ckpt, name, inputs)
            inputs = Segment(ckpt.model, first, last)(inputs)[0]
    ends = [b for _, b in segments(meta)]
    chain = Chain(
        meta, {b: session(graphs[n], threads=1) for b, n in zip(ends, graphs, strict=True)}
    )
    checks: list[GraphCheck] = []
    for block in meta.arm_blocks:
        halves = [("edge", _check_edge)]
        if block != meta.arm_blocks[-1]:  # a split at the final classifier sends nothing
            halves.append(("cloud", _check_cloud))
        for half, check in halves:
            diff, flips = check(ckpt, chain, block, x)
            checks.append(GraphCheck(f"{half} half at split {block}", block, diff, flips))
            if progress:
                progress(f"{checks[-1].name}: max difference {diff:.1e}, {flips} changed")
    bad = [c for c in checks if not c.ok]
    if bad:
        raise ExportError(
            f"{ckpt.path}: not exported: {_culprit(meta, bad)} on {len(x)} held-out images"
        )
    write_artefact(
        out,
        meta=ckpt.meta,
        model_hash=ckpt.hash,
        profile=ckpt.profile,
        graphs=graphs,
        checked={
            "images": len(x),
            "dataset": ckpt.meta.dataset,
            "tolerance": TOLERANCE,
            "max_difference": {c.name: c.max_difference for c in checks},
        },
        exported_with=_versions(),
    )
    return checks


def _culprit(meta, bad: list[GraphCheck]) -> str:
    """Which segment breaks first, and every split it takes with it. Every segment ends some
    split's edge half, so the shallowest failing edge half names it; a failure seen only in
    the batched cloud halves is named by those."""
    first = bad[0]
    edges = [c for c in bad if c.name.startswith("edge")]
    if edges:
        first = edges[0]
        a, b = next(seg for seg in segments(meta) if seg[1] == first.block)
        where = f"the graph of blocks {a}-{b}: "
    else:
        where = "the batched cloud halves: "
    also = [c.name for c in bad if c is not first]
    return (
        where + f"split {first.block} ({first.name}) differs from PyTorch by "
        f"{first.max_difference:.1e} (limit {TOLERANCE:g}) and changes {first.flips} "
        "prediction(s)" + (f"; through it also the {', '.join(also)}" if also else "")
    )


def _versions() -> dict[str, str]:
    found = {"opset": str(OPSET)}
    for dist in ("isplitee", "torch", "onnx", "onnxruntime"):
        with contextlib.suppress(importlib.metadata.PackageNotFoundError):
            found[dist] = importlib.metadata.version(dist)
    return found


def write_deploy_artefact(
    ckpt: Checkpoint,
    out: Path,
    images: torch.Tensor | None = None,
    *,
    log: Callable[[str], None] = print,
) -> list[GraphCheck]:
    """Export ``ckpt`` to ``out`` and say what was checked: what ``isplitee train``, ``export``
    and ``check-encodings`` and the demo all write, so a user reads the same line from each.
    Refuses an ``out`` that is the checkpoint itself (the export would overwrite it)."""
    if out.resolve() == Path(ckpt.path).resolve():
        raise ArtefactError(
            f"{out}: is the checkpoint itself; the artefact would overwrite it: give --out "
            f"another path (the default is {Path(ckpt.path).with_suffix(SUFFIX).name})"
        )
    checks = export_artefact(ckpt, out, images=images)
    worst = max(checks, key=lambda c: c.max_difference)
    log(
        f"wrote {out} (the {len(checks)} halves of every split checked against PyTorch, "
        f"largest difference {worst.max_difference:.1e} in the {worst.name}, no prediction "
        "changed): what a device runs without torch"
    )
    return checks
