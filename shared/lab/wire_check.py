"""Measure, per exit, which wire encodings a trained model tolerates (``shared.wire``).

Every held-out image goes through the real codec (``shared.protocol``: one message per image,
its own scale) at every exit, and the cloud half finishes it; what counts is whether the final
prediction stays what the fp32 activation gives, and what the final layer's accuracy becomes.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from shared.lab.distortions import Distortion
from shared.model import MultiExitMobileNetV2
from shared.protocol import ACTIVATION_KEYS, ENCODINGS, dequantize, encode_tensor
from shared.transforms import normalize
from shared.wire import smallest_tolerated

__all__ = ["EncodingCheck", "check_encodings"]

_CHECKED = tuple(e for e in ENCODINGS if e != "fp32")  # fp32 is the reference


@dataclass(frozen=True)
class EncodingCheck:
    """One exit's measurement: per encoding, the share of images whose final prediction was
    unchanged and the fall in the final layer's accuracy (fraction, positive = worse)."""

    block: int
    agreement: dict[str, float]
    accuracy_drop: dict[str, float]

    @property
    def chosen(self) -> str:
        return smallest_tolerated(self.agreement, self.accuracy_drop)


def _round_trip(act: torch.Tensor, encoding: str) -> torch.Tensor:
    k, out = ACTIVATION_KEYS, []
    for a in act.numpy():
        f = encode_tensor(a, encoding)  # type: ignore[arg-type]
        scale, zero_point = f.get(k["scale"], 1.0), f.get(k["zero_point"], 0)
        out.append(dequantize(f[k["data"]], encoding, a.shape, scale, zero_point))  # type: ignore[arg-type]
    return torch.from_numpy(np.stack(out))


@torch.inference_mode()
def check_encodings(
    model: MultiExitMobileNetV2,
    dataset: Dataset,
    *,
    mean: Sequence[float],
    std: Sequence[float],
    distortions: Sequence[Distortion] = (Distortion(),),
    seed: int = 0,
    batch_size: int = 256,
) -> list[EncodingCheck]:
    """One :class:`EncodingCheck` per exit block of ``model``, over ``dataset`` under each of
    ``distortions`` (the camera's conditions change activation ranges, so the check covers
    them as calibration does)."""
    model.eval()
    g = torch.Generator().manual_seed(seed)
    blocks = model.exit_blocks
    same = {b: dict.fromkeys(_CHECKED, 0) for b in blocks}
    right = {b: dict.fromkeys(("fp32", *_CHECKED), 0) for b in blocks}
    n = 0
    for distortion in distortions:
        for images, labels in DataLoader(dataset, batch_size=batch_size, shuffle=False):
            images = distortion.apply_tensor(images, generator=g)
            x = normalize(images, mean, std)
            n += len(labels)
            act, done = x, 0
            for b in blocks:  # one pass down the backbone, stopping at each exit block
                for i in range(done, b):
                    act = model.features[i](act)
                done = b
                reference = model.cloud(act, b).argmax(1)
                right[b]["fp32"] += int((reference == labels).sum())
                for enc in _CHECKED:
                    pred = model.cloud(_round_trip(act, enc), b).argmax(1)
                    same[b][enc] += int((pred == reference).sum())
                    right[b][enc] += int((pred == labels).sum())
    return [
        EncodingCheck(
            block=b,
            agreement={e: same[b][e] / n for e in _CHECKED},
            accuracy_drop={e: (right[b]["fp32"] - right[b][e]) / n for e in _CHECKED},
        )
        for b in blocks
    ]
