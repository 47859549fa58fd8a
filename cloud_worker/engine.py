"""The models a worker serves, matched to activations by content hash, and the cloud half.

A fleet may run several checkpoints at once (a new model rolled out camera by camera): every
activation names its model's hash, and a worker finishes it only with exactly that model, so a
node and a worker can never disagree silently about the network they split.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cloud_worker.backend import make_cloud_backend
from cloud_worker.onnx_cloud import CloudBackend
from shared.inference import confidence
from shared.jpeg import JpegError, decode_frame
from shared.model_file import ModelFile, load_model
from shared.preprocess import FramePreprocessor
from shared.protocol import FRAME_BLOCK, Activation, ExitAnswer, ProtocolError
from shared.runtime import default_cache_dir

__all__ = ["CloudAnswers", "ModelBank"]


@dataclass(frozen=True)
class CloudAnswers:
    """What the cloud half said about a batch, per frame: the final classifier's labels and
    C_L, and the exits after the split (empty per frame where the backend gives none)."""

    labels: np.ndarray
    confidences: np.ndarray
    exits: list[tuple[ExitAnswer, ...]]
    ms: float
    """Compute milliseconds of the whole batch."""


class ModelBank:
    """The models a worker serves (artefacts or checkpoints), each with its cloud half on
    ``backend`` (``auto``, ``onnxruntime`` or ``torch``; see :mod:`cloud_worker.backend`)."""

    def __init__(
        self,
        paths: Sequence[Path | str],
        *,
        backend: str = "auto",
        cache_dir: Path | None = None,
        threads: int | None = None,
    ) -> None:
        self.models: dict[str, ModelFile] = {}
        self.halves: dict[str, CloudBackend] = {}
        self._preprocess: dict[str, FramePreprocessor] = {}
        for path in paths:
            ckpt = load_model(path)
            self.models[ckpt.hash] = ckpt
            meta = ckpt.meta
            self._preprocess[ckpt.hash] = FramePreprocessor(meta.input_size, meta.mean, meta.std)
            self.halves[ckpt.hash] = make_cloud_backend(
                backend, ckpt, cache_dir or default_cache_dir(), threads
            )

    def lookup(self, model_hash: str) -> ModelFile:
        ckpt = self.models.get(model_hash)
        if ckpt is None and len(model_hash) >= 12:
            found = [c for h, c in self.models.items() if h.startswith(model_hash)]
            if len(found) > 1:
                raise ProtocolError(
                    "unknown_model",
                    f"model {model_hash} matches {len(found)} models this worker serves: the "
                    "node should send more digits of its hash",
                )
            ckpt = found[0] if found else None
        if ckpt is None:
            served = ", ".join(h[:12] for h in self.models)
            raise ProtocolError(
                "unknown_model",
                f"model {model_hash[:12]} is not served by this worker (it serves {served}): "
                "give the node and the worker the same checkpoint",
            )
        return ckpt

    def check(self, act: Activation) -> tuple[str, int]:
        """The batch key of a decoded activation, after checking it fits its model and split."""
        ckpt = self.lookup(act.model_hash)
        if act.is_frame:  # any size: the worker preprocesses it as the node would have
            return ckpt.hash, FRAME_BLOCK
        if act.split_block not in ckpt.meta.arm_blocks[:-1]:
            raise ProtocolError(
                "split",
                f"split block {act.split_block} is not an exit of model {ckpt.short_hash} "
                f"(exits {list(ckpt.meta.exit_blocks)})",
            )
        expected = tuple(ckpt.profile.block(act.split_block).out_shape)
        if act.shape not in (expected, (1, *expected)):
            raise ProtocolError(
                "shape",
                f"activation of shape {list(act.shape)} does not fit block {act.split_block} of "
                f"model {ckpt.short_hash}, which gives {list(expected)}",
            )
        return ckpt.hash, act.split_block

    def inputs(self, act: Activation) -> np.ndarray:
        """What the cloud half takes from a checked activation: its tensor, or for a frame
        offload the frame decoded and preprocessed exactly as the node would have."""
        if not act.is_frame:
            return act.array()
        ckpt = self.lookup(act.model_hash)
        try:
            image = decode_frame(act.data, act.shape)  # type: ignore[arg-type]
            return self._preprocess[ckpt.hash](image)
        except JpegError as exc:
            raise ProtocolError("decode", f"frame: {exc}") from None
        except (MemoryError, ValueError) as exc:  # whatever a decoder makes of a bad file
            raise ProtocolError("decode", f"frame: {type(exc).__name__}: {exc}") from None

    def run(self, model_hash: str, block: int, arrays: Sequence[np.ndarray]) -> CloudAnswers:
        """The final classifier's answers (and the exits' after the split, where the backend
        gives them) for a batch of activations of one model and split."""
        meta = self.models[model_hash].meta
        started = time.perf_counter()
        batch = np.stack([a.reshape(a.shape[-3:]) for a in arrays])
        logits, exit_logits = self.halves[model_hash].with_exits(batch, block)
        temperatures = meta.arm_temperatures()
        conf, labels = confidence(logits, temperatures[-1])
        exits: list[list[ExitAnswer]] = [[] for _ in arrays]
        after = [b for b in meta.arm_blocks[:-1] if b > block]
        if len(exit_logits) == len(after):  # a backend without exits gives none
            for b, x in zip(after, exit_logits, strict=True):
                c, k = confidence(x, temperatures[meta.arm_blocks.index(b)])
                for i in range(len(arrays)):
                    exits[i].append(ExitAnswer(b, int(k[i]), float(c[i])))
        ms = (time.perf_counter() - started) * 1e3
        return CloudAnswers(labels, conf, [tuple(e) for e in exits], ms)
