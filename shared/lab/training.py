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
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset, Subset

from shared.artefact import CHECK_IMAGES, SUFFIX
from shared.checkpoint import ModelMeta, load_checkpoint, save_checkpoint
from shared.lab.datasets import Splits, load_dataset
from shared.lab.distortions import BLUR_LEVELS, NOISE_LEVELS, Distortion
from shared.lab.export import write_deploy_artefact
from shared.lab.recipe import TrainConfig, TrainRecipe
from shared.lab.report import format_table, progress_bar
from shared.lab.wire_check import EncodingCheck, check_encodings
from shared.model import MultiExitMobileNetV2, load_imagenet_backbone
from shared.profile import profile_model
from shared.transforms import normalize

__all__ = [
    "ArmStats",
    "TrainConfig",
    "calibration_distortions",
    "calibration_logits",
    "evaluate_arms",
    "fit_temperatures",
    "predict_arms",
    "seed_everything",
    "train_checkpoint",
    "train_model",
]


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


def _first(dataset: Dataset, limit: int | None) -> Dataset:
    return Subset(dataset, range(min(limit, len(dataset)))) if limit else dataset


def _new_model(recipe: TrainRecipe, num_classes: int) -> MultiExitMobileNetV2:
    seed_everything(recipe.train.seed)  # the initial weights are part of what the seed decides
    model = MultiExitMobileNetV2(
        num_classes=num_classes, width_mult=recipe.width, exit_blocks=recipe.exit_blocks
    )
    if recipe.pretrained == "imagenet":
        load_imagenet_backbone(model)
    return model


def _meta(
    recipe: TrainRecipe,
    model: MultiExitMobileNetV2,
    splits: Splits,
    temperatures: tuple[float, ...],
    wire: list[EncodingCheck],
) -> ModelMeta:
    """What the checkpoint says about itself: how to run it, and how it was made."""
    config = recipe.train
    return ModelMeta(
        width_mult=recipe.width,
        num_classes=len(splits.class_names),
        input_size=recipe.input_size,
        exit_blocks=model.exit_blocks,
        class_names=splits.class_names,
        mean=config.mean,
        std=config.std,
        temperatures=temperatures,
        wire_encodings=tuple(c.chosen for c in wire),
        dataset=splits.spec,
        split_seed=config.seed,
        notes={
            "pretrained": recipe.pretrained,
            "epochs": str(config.epochs),
            "augment": f"{config.augment:g}",
            "calibrated_on": recipe.calibrate_on,
        },
    )


def _exit_table(
    recipe: TrainRecipe,
    model: MultiExitMobileNetV2,
    test: Dataset,
    temperatures: tuple[float, ...],
) -> tuple[str, int]:
    """Per-exit accuracy and confidence, raw and calibrated, on the held-out test split, and
    the number of images it was measured on."""
    config = recipe.train
    logits, labels = predict_arms(model, test, mean=config.mean, std=config.std)
    raw = evaluate_arms(logits, labels, model.arm_blocks, [1.0] * len(model.arm_blocks))
    cal = evaluate_arms(logits, labels, model.arm_blocks, temperatures)
    prof = profile_model(model, recipe.input_size)
    rows = [
        [
            "final" if i == len(raw) - 1 else str(r.block),
            f"{r.accuracy * 100:.1f}",
            f"{r.mean_confidence:.3f}",
            f"{c.mean_confidence:.3f}",
            f"{temperatures[i]:.2f}",
            f"{prof.macs_to_exit(r.block) / 1e6:.2f}",
        ]
        for i, (r, c) in enumerate(zip(raw, cal, strict=True))
    ]
    heads = ["block", "acc %", "mean conf", "calibrated conf", "temperature", "MFLOPs"]
    return format_table(heads, rows), len(labels)


def train_checkpoint(
    recipe: TrainRecipe,
    out: Path,
    *,
    export: bool = True,
    log: Callable[[str], None] = print,
) -> str:
    """Train, calibrate and check ``recipe``'s model, write it to ``out`` (and its deploy
    artefact beside it unless ``export`` is false) and return the checkpoint's hash.

    Prints, through ``log``, the per-exit table on the test split and what each exit's wire
    check chose: what a user reads to judge the model before deploying it.
    """
    config = recipe.train
    norm = {"mean": config.mean, "std": config.std}
    splits = load_dataset(recipe.dataset, recipe.input_size, config.seed)
    model = _new_model(recipe, len(splits.class_names))
    train_set = _first(splits.train, recipe.limit)
    log(
        f"training on {recipe.dataset}: {len(train_set)} train / {len(splits.val)} val / "
        f"{len(splits.test)} test images at {recipe.input_size}px, {config.epochs} epochs"
    )
    started = time.perf_counter()
    train_model(model, train_set, config)
    elapsed = time.perf_counter() - started
    val_set = _first(splits.val, recipe.limit)
    conditions = calibration_distortions(recipe.calibrate_on)
    val_logits, val_labels = calibration_logits(
        model, val_set, distortions=conditions, seed=config.seed, **norm
    )
    temperatures = fit_temperatures(val_logits, val_labels)
    wire = check_encodings(model, val_set, distortions=conditions, **norm)
    digest = save_checkpoint(out, model, _meta(recipe, model, splits, temperatures, wire))
    table, n_test = _exit_table(recipe, model, splits.test, temperatures)
    log(
        f"\ntrained in {elapsed:.0f} s on {torch.get_num_threads()} CPU thread(s); per-exit "
        f"results on the held-out test split ({n_test} images):"
    )
    log(table)
    log(
        "\nsmallest encoding each exit's held-out images tolerated (what nodes on encoding "
        "'auto' send): " + ", ".join(f"{c.block}: {c.chosen}" for c in wire)
    )
    log(f"\nwrote {out} (hash {digest[:12]})")
    if export:
        test = [splits.test[i][0] for i in range(min(CHECK_IMAGES, len(splits.test)))]
        images = normalize(torch.stack(test), config.mean, config.std)
        write_deploy_artefact(load_checkpoint(out), out.with_suffix(SUFFIX), images, log=log)
    return digest
