"""Joint training of every exit, per-exit evaluation and temperature calibration.

All arms are trained together with a weighted sum of cross-entropy losses, as in the paper.
Two departures are options, not defaults, so the paper's setting stays reproducible:
distortion augmentation (the paper trains on clean images only) and per-exit temperature
scaling, both aimed at the spec's fault 7: early exits that are confidently wrong on distorted
images.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset

from shared.lab.distortions import BLUR_LEVELS, NOISE_LEVELS, Distortion
from shared.lab.report import progress_bar
from shared.model import MultiExitMobileNetV2
from shared.transforms import IMAGENET_MEAN, IMAGENET_STD, normalize

__all__ = [
    "ArmStats",
    "TrainConfig",
    "calibration_distortions",
    "calibration_logits",
    "evaluate_arms",
    "fit_temperatures",
    "predict_arms",
    "seed_everything",
    "train_model",
]


@dataclass(frozen=True)
class TrainConfig:
    epochs: int = 30
    batch_size: int = 64
    lr_backbone: float = 2e-3
    """The paper fine-tunes ImageNet weights at 1.5e-4; from scratch a larger rate is needed."""
    lr_exits: float = 1e-2
    weight_decay: float = 5e-4
    exit_weights: tuple[float, ...] | None = None
    """Loss weight per arm (shallowest first); None gives every arm weight 1."""
    augment: float = 0.0
    """Share of training images given a random paper distortion (noise or blur level)."""
    seed: int = 0
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    progress: bool = True
    log: Callable[[str], None] = field(default=print, repr=False)

    def __post_init__(self) -> None:
        if self.epochs < 1:
            raise ValueError(f"epochs should be at least 1, got {self.epochs!r}")
        if self.batch_size < 2:
            raise ValueError(f"batch_size should be at least 2, got {self.batch_size!r}")
        if not 0.0 <= self.augment <= 1.0:
            raise ValueError(f"augment should be a share in [0, 1], got {self.augment!r}")


def seed_everything(seed: int) -> torch.Generator:
    """Seed Python, NumPy and torch; single-threaded determinism is what CPU training needs."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    torch.use_deterministic_algorithms(True, warn_only=True)
    g = torch.Generator()
    g.manual_seed(seed)
    return g


def _augment(images: Tensor, share: float, g: torch.Generator) -> Tensor:
    """Give a random ``share`` of the batch a random noise or blur level from the paper's grid.

    Half the picked images get noise, half blur; images sharing a blur level are blurred in
    one call, so augmentation costs a few batched ops rather than one op per image.
    """
    if share <= 0:
        return images
    out = images.clone()
    n = len(images)
    picked = torch.rand(n, generator=g) < share
    noisy = picked & (torch.rand(n, generator=g) < 0.5)
    blurred = picked & ~noisy
    levels = torch.randint(len(NOISE_LEVELS), (n,), generator=g)
    for i, level in enumerate(NOISE_LEVELS):
        idx = torch.nonzero(noisy & (levels == i)).flatten()
        if len(idx):
            out[idx] = Distortion("gaussian_noise", level).apply_tensor(images[idx], generator=g)
    for i, level in enumerate(BLUR_LEVELS):
        idx = torch.nonzero(blurred & (levels == i)).flatten()
        if len(idx):
            out[idx] = Distortion("gaussian_blur", level).apply_tensor(images[idx])
    return out


def train_model(model: MultiExitMobileNetV2, train_set: Dataset, config: TrainConfig) -> None:
    """Train all arms jointly with Adam and a cosine schedule (the paper's recipe)."""
    g = seed_everything(config.seed)
    n_arms = len(model.arm_blocks)
    weights = config.exit_weights or tuple(1.0 for _ in range(n_arms))
    if len(weights) != n_arms:
        raise ValueError(f"exit_weights has {len(weights)} values for {n_arms} arms")
    loader = DataLoader(train_set, batch_size=config.batch_size, shuffle=True, generator=g)
    head_params = list(model.exits.parameters()) + list(model.classifier.parameters())
    opt = torch.optim.Adam(
        [
            {"params": model.features.parameters(), "lr": config.lr_backbone},
            {"params": head_params, "lr": config.lr_exits},
        ],
        weight_decay=config.weight_decay,
    )
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=config.epochs * len(loader))
    loss_fn = nn.CrossEntropyLoss()
    model.train()
    bar = progress_bar(range(config.epochs), config.progress, "train", "epoch")
    for epoch in bar:
        total, seen = 0.0, 0
        for images, labels in loader:
            images = normalize(_augment(images, config.augment, g), config.mean, config.std)
            outs = model(images)
            loss = sum(w * loss_fn(o, labels) for w, o in zip(weights, outs, strict=True))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            total += float(loss.detach()) * len(labels)
            seen += len(labels)
        if hasattr(bar, "set_postfix"):
            bar.set_postfix(epoch=epoch + 1, loss=f"{total / seen:.3f}")
    model.eval()


@torch.no_grad()
def predict_arms(
    model: MultiExitMobileNetV2,
    dataset: Dataset,
    *,
    mean: Sequence[float],
    std: Sequence[float],
    distortion: Distortion | None = None,
    generator: torch.Generator | None = None,
    batch_size: int = 256,
    progress: bool = False,
) -> tuple[Tensor, Tensor]:
    """Logits of every arm for every image: (N, arms, classes), and the labels (N,)."""
    model.eval()
    logits, labels = [], []
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False)
    for images, y in progress_bar(loader, progress, "infer", "batch"):
        if distortion is not None:
            images = distortion.apply_tensor(images, generator=generator)
        outs = model(normalize(images, mean, std))
        logits.append(torch.stack(outs, dim=1))
        labels.append(y)
    return torch.cat(logits), torch.cat(labels)


def calibration_distortions(calibrate_on: str) -> list[Distortion]:
    """The conditions held-out checks run under: clean, or also every paper level."""
    kinds = [Distortion()]
    if calibrate_on == "distorted":
        kinds += [Distortion("gaussian_noise", lv) for lv in NOISE_LEVELS]
        kinds += [Distortion("gaussian_blur", lv) for lv in BLUR_LEVELS]
    return kinds


def calibration_logits(
    model: MultiExitMobileNetV2,
    val_set: Dataset,
    *,
    mean: Sequence[float],
    std: Sequence[float],
    distortions: Sequence[Distortion],
    seed: int = 0,
) -> tuple[Tensor, Tensor]:
    """Held-out logits to fit temperatures on, under ``distortions`` (``calibration_distortions``:
    clean only, or also every paper level).

    Temperatures fitted on clean images alone can make an exit *more* confident, which is the
    wrong way for the distorted frames where exits fail; the distorted set asks the exits to be
    honest across the conditions a camera meets.
    """
    g = torch.Generator().manual_seed(seed)
    parts = [
        predict_arms(model, val_set, mean=mean, std=std, distortion=d, generator=g)
        for d in distortions
    ]
    return torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts])


def fit_temperatures(logits: Tensor, labels: Tensor) -> tuple[float, ...]:
    """Per-arm temperature minimising the NLL on held-out data (Guo et al., 2017).

    A 1-D problem per arm, solved by golden-section search on log T in [-3, 3]: robust, no
    learning rate to tune, and it cannot change any arm's prediction, only its confidence.
    """
    temps = []
    for arm in range(logits.shape[1]):
        z = logits[:, arm].double()

        def nll(log_t: float, z: Tensor = z) -> float:
            return float(nn.functional.cross_entropy(z / math.exp(log_t), labels))

        lo, hi = -3.0, 3.0
        phi = (math.sqrt(5) - 1) / 2
        a, b = hi - phi * (hi - lo), lo + phi * (hi - lo)
        fa, fb = nll(a), nll(b)
        for _ in range(60):
            if fa < fb:
                hi, b, fb = b, a, fa
                a = hi - phi * (hi - lo)
                fa = nll(a)
            else:
                lo, a, fa = a, b, fb
                b = lo + phi * (hi - lo)
                fb = nll(b)
        temps.append(round(math.exp((lo + hi) / 2), 6))
    return tuple(temps)


@dataclass(frozen=True)
class ArmStats:
    block: int
    accuracy: float
    mean_confidence: float


def evaluate_arms(
    logits: Tensor, labels: Tensor, blocks: Sequence[int], temperatures: Sequence[float]
) -> list[ArmStats]:
    """Accuracy and mean max-softmax confidence of each arm."""
    stats = []
    for arm, block in enumerate(blocks):
        probs = torch.softmax(logits[:, arm] / temperatures[arm], dim=1)
        conf, pred = probs.max(dim=1)
        acc = float((pred == labels).float().mean())
        stats.append(ArmStats(block, acc, float(conf.mean())))
    return stats
