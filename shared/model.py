"""Multi-exit MobileNetV2 that can be cut at any exit.

The device runs the front of the network up to a split block and reads the exit there; the
cloud finishes the same network from that block's activation. Both halves are *methods of one
module* over one set of weights, so a split can never drift from the whole network: running
``cloud(edge(x).activation)`` is, op for op, the forward pass of the full model.

Blocks are numbered 1..19 as in the paper: block ``b`` is ``features[b - 1]`` of torchvision's
MobileNetV2, block 19 is the last 1x1 convolution to 1280 channels, and the final classifier
(the last "arm") sits after it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torchvision.models import mobilenet_v2

from shared.errors import IsplitEEError
from shared.meta import DEFAULT_EXIT_BLOCKS
from shared.protocol import NUM_BLOCKS

__all__ = [
    "DEFAULT_EXIT_BLOCKS",
    "NUM_BLOCKS",
    "EdgeResult",
    "MultiExitMobileNetV2",
    "WeightsUnavailableError",
    "exit_head",
    "load_imagenet_backbone",
]


class WeightsUnavailableError(IsplitEEError, RuntimeError):
    """Pretrained weights cannot be had here; the message says to train from scratch."""


def exit_head(in_channels: int, num_classes: int) -> nn.Module:
    """The paper's exit: BatchNorm2d -> global average pool -> Linear.

    The BatchNorm lets a head read a block's raw activation scale without retuning the
    backbone, which matters because exits are trained jointly with it.
    """
    return nn.Sequential(
        nn.BatchNorm2d(in_channels),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(1),
        nn.Linear(in_channels, num_classes),
    )


@dataclass(frozen=True)
class EdgeResult:
    """What the device holds after running up to a split.

    ``logits`` has one entry per arm up to and including the split, shallowest first; the
    shallower ones are free side observations for the bandit. ``activation`` is what would be
    sent to the cloud (the split block's output).
    """

    logits: tuple[Tensor, ...]
    activation: Tensor


def _block_out_channels(block: nn.Module) -> int:
    if hasattr(block, "out_channels"):  # torchvision's InvertedResidual
        return int(block.out_channels)
    convs = [m for m in block.modules() if isinstance(m, nn.Conv2d)]
    return int(convs[-1].out_channels)


class MultiExitMobileNetV2(nn.Module):
    """torchvision MobileNetV2 with exit heads after chosen blocks.

    Args:
        num_classes: classes of every exit and of the final classifier.
        width_mult: channel multiplier, passed to torchvision.
        exit_blocks: 1-based blocks (1..18) after which an exit hangs, strictly increasing.
            The final classifier is always the last arm, at block 19.
        dropout: dropout of the final classifier (torchvision's default 0.2).
        head: builds an exit head from (in_channels, num_classes); defaults to :func:`exit_head`.
    """

    def __init__(
        self,
        *,
        num_classes: int,
        width_mult: float = 1.0,
        exit_blocks: Sequence[int] = DEFAULT_EXIT_BLOCKS,
        dropout: float = 0.2,
        head: Callable[[int, int], nn.Module] | None = None,
    ) -> None:
        super().__init__()
        if num_classes < 2:
            raise ValueError(f"num_classes should be at least 2, got {num_classes!r}")
        if not width_mult > 0:
            raise ValueError(f"width_mult should be positive, got {width_mult!r}")
        blocks = tuple(int(b) for b in exit_blocks)
        if not blocks:
            raise ValueError("exit_blocks should name at least one block, got an empty list")
        if any(b < 1 or b >= NUM_BLOCKS for b in blocks) or list(blocks) != sorted(set(blocks)):
            raise ValueError(
                f"exit_blocks should be strictly increasing block numbers in 1..{NUM_BLOCKS - 1}, "
                f"got {list(exit_blocks)!r}"
            )
        head = head or exit_head
        backbone = mobilenet_v2(num_classes=num_classes, width_mult=width_mult, dropout=dropout)
        self.num_classes = num_classes
        self.width_mult = float(width_mult)
        self.exit_blocks = blocks
        self.features = backbone.features
        self.classifier = backbone.classifier
        self.exits = nn.ModuleDict(
            {str(b): head(_block_out_channels(self.features[b - 1]), num_classes) for b in blocks}
        )
        for m in self.exits.modules():
            if isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, 0, 0.01)
                nn.init.zeros_(m.bias)

    @property
    def arm_blocks(self) -> tuple[int, ...]:
        """Block of every arm, the final classifier last (block 19)."""
        return (*self.exit_blocks, NUM_BLOCKS)

    def _check_split(self, block: int) -> None:
        if block not in self.arm_blocks:
            raise ValueError(f"split block should be one of {self.arm_blocks}, got {block!r}")

    def _final(self, activation: Tensor) -> Tensor:
        pooled = nn.functional.adaptive_avg_pool2d(activation, 1)
        return self.classifier(torch.flatten(pooled, 1))

    def edge(self, x: Tensor, block: int) -> EdgeResult:
        """Run blocks 1..``block`` and every exit on the way.

        With ``block == 19`` the whole network runs on the device and the last logits are the
        final classifier's.
        """
        self._check_split(block)
        logits: list[Tensor] = []
        for b in range(1, block + 1):
            x = self.features[b - 1](x)
            if str(b) in self.exits:
                logits.append(self.exits[str(b)](x))
        if block == NUM_BLOCKS:
            logits.append(self._final(x))
        return EdgeResult(logits=tuple(logits), activation=x)

    def cloud(self, activation: Tensor, block: int) -> Tensor:
        """Finish the network from the output of ``block``: final-classifier logits. Block 0
        is the input itself (a frame offload: the whole network runs here)."""
        return self.cloud_exits(activation, block, exits=False)[0]

    def cloud_exits(
        self, activation: Tensor, block: int, *, exits: bool = True
    ) -> tuple[Tensor, list[Tensor]]:
        """The final-classifier logits from the output of ``block``, and (``exits``) those of
        every exit after it, shallowest first."""
        if block != 0:
            self._check_split(block)
        x, logits = activation, []
        for b in range(block + 1, NUM_BLOCKS + 1):
            x = self.features[b - 1](x)
            if exits and str(b) in self.exits:
                logits.append(self.exits[str(b)](x))
        return self._final(x), logits

    def forward(self, x: Tensor) -> list[Tensor]:
        """Logits of every arm, shallowest first, the final classifier last."""
        return list(self.edge(x, NUM_BLOCKS).logits)


def load_imagenet_backbone(model: MultiExitMobileNetV2) -> None:
    """Copy torchvision's ImageNet weights into the backbone (exits and classifier stay new).

    Raises:
        WeightsUnavailableError: the weights cannot be had (no internet, no cached copy) or
            the width does not match the published weights; the message names ``--pretrained none``.
    """
    from torchvision.models import MobileNet_V2_Weights

    if model.width_mult != 1.0:
        raise WeightsUnavailableError(
            f"ImageNet weights exist only for width_mult 1.0, got {model.width_mult}; "
            "use --pretrained none or --width 1.0"
        )
    try:
        state = MobileNet_V2_Weights.IMAGENET1K_V1.get_state_dict(progress=False)
    except Exception as exc:  # URLError, OSError, hash mismatch: all mean "not available here"
        raise WeightsUnavailableError(
            "cannot load torchvision's ImageNet MobileNetV2 weights "
            f"({type(exc).__name__}: {exc}); connect to the internet once so torch caches them, "
            "or train from scratch with --pretrained none"
        ) from exc
    features = {k[len("features.") :]: v for k, v in state.items() if k.startswith("features.")}
    model.features.load_state_dict(features)
