"""Per-sample, per-exit logits of a checkpoint on its held-out test images, cached on disk.

Running the network is the slow part of an offline evaluation; the bandit itself needs only
each exit's confidence and whether its prediction is right. A table is computed once per
(checkpoint hash, distortion, stream length, seed) and kept as ``.npz`` (no pickle), so a second
``isplitee simulate`` with other policies or costs starts at once.

Only the test split, which the checkpoint never trained or calibrated on, is used. A stream
longer than that split draws images with replacement, each draw with a fresh distortion.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from shared.checkpoint import Checkpoint
from shared.lab.distortions import Distortion
from shared.lab.report import progress_bar
from shared.lab.simulate import Segment, Stream
from shared.transforms import normalize

__all__ = ["ConfidenceTable", "build_stream", "build_table", "default_cache_dir"]

TABLE_VERSION = 1


def default_cache_dir() -> Path:
    """``$ISPLITEE_CACHE``, else ``$XDG_CACHE_HOME/isplitee``, else ``~/.cache/isplitee``."""
    if os.environ.get("ISPLITEE_CACHE"):
        return Path(os.environ["ISPLITEE_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache")
    return Path(base) / "isplitee"


@dataclass(frozen=True)
class ConfidenceTable:
    logits: np.ndarray
    """(samples, arms, classes) float32."""
    labels: np.ndarray
    """(samples,) int64."""
    source_index: np.ndarray
    """(samples,) index of each sample in the test split."""
    distortion: str
    with_replacement: bool
    test_size: int
    from_cache: bool = False

    def __len__(self) -> int:
        return len(self.labels)

    def confidences(self, temperatures: tuple[float, ...] | None = None) -> np.ndarray:
        """Max-softmax confidence of each arm (samples, arms), optionally temperature-scaled."""
        z = self.logits.astype(np.float64)
        if temperatures is not None:
            z = z / np.asarray(temperatures, dtype=np.float64)[None, :, None]
        z = z - z.max(axis=2, keepdims=True)
        p = np.exp(z)
        return (p.max(axis=2) / p.sum(axis=2)).astype(np.float64)

    def classes(self) -> np.ndarray:
        """Each arm's predicted class (samples, arms)."""
        return self.logits.argmax(axis=2)

    def correct(self) -> np.ndarray:
        """Whether each arm's prediction is right (samples, arms); temperature cannot change it."""
        return self.logits.argmax(axis=2) == self.labels[:, None]


def _cache_path(cache_dir: Path, ckpt: Checkpoint, key: dict) -> Path:
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
    return cache_dir / f"table-{ckpt.short_hash}-{digest}.npz"


def build_table(
    ckpt: Checkpoint,
    distortion: Distortion,
    *,
    samples: int | None = None,
    seed: int = 0,
    dataset: str | None = None,
    cache_dir: Path | None = None,
    use_cache: bool = True,
    batch_size: int = 256,
    progress: bool = False,
) -> ConfidenceTable:
    """Logits of every arm on ``samples`` distorted test images (all of them when None)."""
    from shared.lab.datasets import load_dataset

    dataset = dataset or ckpt.meta.dataset
    key = {
        "version": TABLE_VERSION,
        "model": ckpt.hash,
        "dataset": dataset,
        "distortion": str(distortion),
        "samples": samples,
        "seed": seed,
    }
    path = _cache_path(cache_dir or default_cache_dir(), ckpt, key) if use_cache else None
    if path is not None and path.is_file():
        try:
            with np.load(path, allow_pickle=False) as f:
                return ConfidenceTable(
                    logits=f["logits"],
                    labels=f["labels"],
                    source_index=f["source_index"],
                    distortion=str(distortion),
                    with_replacement=bool(f["with_replacement"]),
                    test_size=int(f["test_size"]),
                    from_cache=True,
                )
        except (OSError, KeyError, ValueError):
            pass  # a damaged cache entry is recomputed and overwritten

    test = load_dataset(dataset, ckpt.meta.input_size, ckpt.meta.split_seed).test
    n_test = len(test)
    rng = np.random.default_rng(seed)
    n = n_test if samples is None else int(samples)
    if n < 1:
        raise ValueError(f"samples should be at least 1, got {samples!r}")
    with_replacement = n > n_test
    index = rng.integers(0, n_test, n) if with_replacement else rng.permutation(n_test)[:n]
    g = torch.Generator().manual_seed(seed)
    model, meta = ckpt.model.eval(), ckpt.meta
    chunks, labels = [], []
    with torch.no_grad():
        for start in progress_bar(range(0, n, batch_size), progress, "confidences", "batch"):
            items = [test[int(i)] for i in index[start : start + batch_size]]
            images = distortion.apply_tensor(torch.stack([im for im, _ in items]), generator=g)
            outs = model(normalize(images, meta.mean, meta.std))
            chunks.append(torch.stack(outs, dim=1).numpy().astype(np.float32))
            labels += [int(y) for _, y in items]
    table = ConfidenceTable(
        logits=np.concatenate(chunks),
        labels=np.asarray(labels, dtype=np.int64),
        source_index=np.asarray(index, dtype=np.int64),
        distortion=str(distortion),
        with_replacement=with_replacement,
        test_size=n_test,
    )
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.stem + ".tmp.npz")
        np.savez_compressed(
            tmp,
            logits=table.logits,
            labels=table.labels,
            source_index=table.source_index,
            with_replacement=np.asarray(with_replacement),
            test_size=np.asarray(n_test),
        )
        tmp.replace(path)
    return table


def build_stream(
    ckpt: Checkpoint,
    parts: Sequence[tuple[Distortion, int]],
    *,
    calibrated: bool = False,
    seed: int = 0,
    on_table: Callable[[ConfidenceTable], None] | None = None,
    **table_options,
) -> Stream:
    """A stream of segments, one (distortion, length) each, for the offline evaluator.

    Each segment draws its own table (seed ``seed + 1000 * index``); ``on_table`` sees each as it
    is built (the CLI reports where it came from). ``calibrated`` applies the checkpoint's
    per-exit temperatures to the confidences.
    """
    temps = ckpt.meta.arm_temperatures() if calibrated else None
    confs, correct, classes, segments, start = [], [], [], [], 0
    for i, (distortion, n) in enumerate(parts):
        table = build_table(ckpt, distortion, samples=n, seed=seed + 1000 * i, **table_options)
        if on_table is not None:
            on_table(table)
        confs.append(table.confidences(temps))
        correct.append(table.correct())
        classes.append(table.classes())
        segments.append(Segment(str(distortion), start, start + len(table)))
        start += len(table)
    return Stream(
        np.concatenate(confs), np.concatenate(correct), tuple(segments), np.concatenate(classes)
    )
