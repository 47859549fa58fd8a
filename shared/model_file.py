"""What a ``--model`` path holds: an exported artefact (no torch needed) or a checkpoint.

The node and the worker take either. An artefact (:mod:`shared.artefact`) is what a device
runs; a PyTorch checkpoint keeps working where torch is installed (the training machine, a
worker that wants its PyTorch backend). Both give the same :class:`ModelFile` view: metadata,
content hash, per-block profile, so the programs never ask which one they hold except to pick
how to run it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

from shared.artefact import SUFFIX, Artefact, is_artefact, load_artefact
from shared.errors import IsplitEEError
from shared.meta import ModelMeta
from shared.profile import ModelProfile

__all__ = ["ModelFile", "ModelFileError", "check_backend", "load_model"]


class ModelFileError(IsplitEEError):
    """A model file this installation cannot read; the message says what to do."""


class ModelFile(Protocol):
    path: Path
    meta: ModelMeta
    hash: str

    @property
    def short_hash(self) -> str: ...

    @property
    def profile(self) -> ModelProfile: ...


def load_model(path: str | Path, *, expected_hash: str | None = None) -> ModelFile:
    """An :class:`~shared.artefact.Artefact` or a :class:`~shared.checkpoint.Checkpoint`,
    by what the file is (an artefact's suffix or manifest), checked as its loader checks."""
    path = Path(path)
    if not path.is_file():
        raise ModelFileError(f"{path}: no such model file")
    if is_artefact(path):
        return load_artefact(path, expected_hash=expected_hash)
    try:
        from shared.checkpoint import load_checkpoint
    except ImportError as exc:
        raise ModelFileError(
            f"{path}: a PyTorch checkpoint, and reading one needs torch ({exc.name} is not "
            "installed here). Export it where torch is (isplitee export "
            f"{path.name}, which writes {path.with_suffix(SUFFIX).name}) and give that file "
            "instead"
        ) from None
    return load_checkpoint(path, expected_hash=expected_hash)


def check_backend(name: str, model: ModelFile) -> None:
    """Refuse the ``torch`` backend on an artefact: it holds graphs, no PyTorch weights."""
    if name == "torch" and isinstance(model, Artefact):
        raise ValueError(
            f"backend 'torch' needs the checkpoint's weights, and {model.path} is an artefact: "
            "give the .pt (where torch is installed) or use backend auto"
        )


def is_checkpoint(model: ModelFile) -> bool:
    """Whether ``model`` carries PyTorch weights (a checkpoint) rather than graphs only."""
    return not isinstance(model, Artefact)
