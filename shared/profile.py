"""Per-block compute and activation size of a multi-exit model at a given input size.

These figures feed two things: ``isplitee info`` (what a split costs on the device and on the
wire) and the measured cost model of the bandit (which charges each block what it really costs
instead of the paper's flat 0.1 per block).

FLOPs here are multiply-accumulates of convolutions and linear layers, the convention of
torchvision's model table (MobileNetV2 at 224x224: about 300 M). BatchNorm, activations and
pooling are left out, as there.

Counting needs torch (hooks on the model); a profile, once counted, is plain data that an
exported artefact carries (:meth:`ModelProfile.to_dict`), so a device without torch knows its
activation sizes too.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from shared.protocol import ENCODINGS, NUM_BLOCKS, tensor_bytes

if TYPE_CHECKING:  # counting needs torch; reading a counted profile does not
    import torch
    from torch import nn

    from shared.model import MultiExitMobileNetV2

__all__ = [
    "BlockProfile",
    "ModelProfile",
    "measure_exit_latency",
    "profile_model",
]


@dataclass(frozen=True)
class BlockProfile:
    block: int
    macs: int
    """Multiply-accumulates of this block alone."""
    cumulative_macs: int
    """Blocks 1..block together: what the device spends to reach this split."""
    out_shape: tuple[int, ...]
    """Activation shape for one image (C, H, W)."""

    @property
    def elements(self) -> int:
        n = 1
        for d in self.out_shape:
            n *= d
        return n

    def payload_bytes(self, encoding: str = "fp32") -> int:
        """Raw activation bytes for one image in ``encoding`` (before any framing)."""
        try:
            return tensor_bytes(self.elements, encoding)  # type: ignore[arg-type]
        except KeyError:
            raise ValueError(
                f"encoding should be one of {', '.join(ENCODINGS)}, got {encoding!r}"
            ) from None


@dataclass(frozen=True)
class ModelProfile:
    input_size: int
    blocks: tuple[BlockProfile, ...]
    exit_macs: dict[int, int]
    """Exit head cost by block; the final classifier is at block 19."""

    def block(self, block: int) -> BlockProfile:
        return self.blocks[block - 1]

    def macs_to_exit(self, block: int) -> int:
        """Backbone up to ``block`` plus the head there: one exit's answer on its own."""
        return self.block(block).cumulative_macs + self.exit_macs[block]

    def macs_to_split(self, block: int) -> int:
        """What the device computes for a split at ``block``: the backbone up to it and every
        exit head on the way (each exit's confidence is observed, see ``model.edge``)."""
        heads = sum(m for b, m in self.exit_macs.items() if b <= block)
        return self.block(block).cumulative_macs + heads

    @property
    def total_macs(self) -> int:
        return self.macs_to_exit(NUM_BLOCKS)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: what an exported artefact stores (read back by :meth:`from_dict`)."""
        return {
            "input_size": self.input_size,
            "blocks": [[b.macs, list(b.out_shape)] for b in self.blocks],
            "exit_macs": {str(b): m for b, m in self.exit_macs.items()},
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelProfile:
        """The inverse of :meth:`to_dict`; ValueError (naming what) when it does not fit."""
        try:
            rows = [(int(macs), tuple(int(d) for d in shape)) for macs, shape in data["blocks"]]
            exits = {int(b): int(m) for b, m in data["exit_macs"].items()}
            size = int(data["input_size"])
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"profile is not input_size, blocks and exit_macs: {exc}") from None
        if len(rows) != NUM_BLOCKS or NUM_BLOCKS not in exits:
            raise ValueError(
                f"profile should have {NUM_BLOCKS} blocks and the final classifier's head, got "
                f"{len(rows)} blocks and heads at {sorted(exits)}"
            )
        blocks, cumulative = [], 0
        for b, (macs, shape) in enumerate(rows, start=1):
            cumulative += macs
            blocks.append(BlockProfile(b, macs, cumulative, shape))
        return cls(input_size=size, blocks=tuple(blocks), exit_macs=exits)


def _count(module: nn.Module, out: torch.Tensor) -> int:
    from torch import nn

    if isinstance(module, nn.Conv2d):
        k = module.kernel_size[0] * module.kernel_size[1]
        return out.numel() // out.shape[0] * (module.in_channels // module.groups) * k
    if isinstance(module, nn.Linear):
        return out.numel() // out.shape[0] * module.in_features
    return 0


def _macs_of(module: nn.Module, inp: torch.Tensor) -> tuple[int, torch.Tensor]:
    from torch import nn

    total = 0

    def hook(m: nn.Module, args: tuple, out: torch.Tensor) -> None:
        nonlocal total
        total += _count(m, out)

    handles = [
        m.register_forward_hook(hook)
        for m in module.modules()
        if isinstance(m, nn.Conv2d | nn.Linear)
    ]
    try:
        result = module(inp)
    finally:
        for h in handles:
            h.remove()
    return total, result


def _pieces(
    model: MultiExitMobileNetV2, input_size: int
) -> Iterator[tuple[str, int, nn.Module, torch.Tensor]]:
    """Every piece on the way to every arm, with the input it sees for one dummy image.

    Yields ("block", b, module, input) for each backbone block and ("head", b, module, input)
    for each exit head; the final classifier is the head at block 19 (its input is pooled).
    Eval mode and no autograd for the whole walk.
    """
    import torch
    from torch import nn

    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            x = torch.zeros(1, 3, input_size, input_size)
            for b in range(1, NUM_BLOCKS + 1):
                layer = model.features[b - 1]
                yield "block", b, layer, x
                x = layer(x)
                if str(b) in model.exits:
                    yield "head", b, model.exits[str(b)], x
            pooled = torch.flatten(nn.functional.adaptive_avg_pool2d(x, 1), 1)
            yield "head", NUM_BLOCKS, model.classifier, pooled
    finally:
        model.train(was_training)


def profile_model(model: MultiExitMobileNetV2, input_size: int) -> ModelProfile:
    """Count MACs block by block on one dummy image of ``input_size`` x ``input_size``."""
    blocks: list[BlockProfile] = []
    exit_macs: dict[int, int] = {}
    cumulative = 0
    for kind, b, module, inp in _pieces(model, input_size):
        macs, out = _macs_of(module, inp)
        if kind == "head":
            exit_macs[b] = macs
        else:
            cumulative += macs
            blocks.append(BlockProfile(b, macs, cumulative, tuple(out.shape[1:])))
    return ModelProfile(input_size=input_size, blocks=tuple(blocks), exit_macs=exit_macs)


def measure_exit_latency(
    model: MultiExitMobileNetV2, input_size: int, *, repeats: int = 30, warmup: int = 5
) -> dict[int, float]:
    """Seconds this machine takes for a split at each arm: the backbone up to it and every exit
    head on the way, as ``model.edge`` computes them (side observations need every exit).

    Timed piece by piece on one image, median over ``repeats`` after ``warmup`` passes, then
    summed along the path to each arm. Run it on the device itself (a Pi) to get its real
    costs; FLOPs alone miss that depthwise layers run slower per MAC.
    """
    block_s: list[float] = []
    head_s: dict[int, float] = {}
    for kind, b, module, inp in _pieces(model, input_size):
        for _ in range(warmup):
            module(inp)
        samples = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            module(inp)
            samples.append(time.perf_counter() - t0)
        if kind == "head":
            head_s[b] = statistics.median(samples)
        else:
            block_s.append(statistics.median(samples))
    return {b: sum(block_s[:b]) + sum(s for e, s in head_s.items() if e <= b) for b in head_s}
