"""What the benchmark scripts share: interleaved median timing, the held-out digits, ONNX
Runtime sessions set up as the node sets up its own, and pages' prose filled from templates.

Timings are medians over repeats interleaved across the variants being compared, so a burst of
load elsewhere on this shared machine hits every variant alike; ratios are within one run. Each
variant's timed block starts ``SETTLE_S`` after the previous one ended: PyTorch's and ONNX
Runtime's worker threads keep spinning for a while after a call, and on two cores a runtime
timed right after the other one is slowed by them (``bench/bench_profile.py`` measures by how
much), which a node running only one runtime never is.
"""

from __future__ import annotations

import functools
import statistics
import string
import time
from collections.abc import Callable
from pathlib import Path

import torch

from shared.checkpoint import Checkpoint
from shared.runtime import session as onnx_session

__all__ = ["SETTLE_S", "bench_message", "digits", "fill_template", "median_ms", "session"]

SETTLE_S = 0.05
"""Pause before each timed block: longer than the runtimes' worker threads spin after a call."""


def median_ms(
    fns: dict[str, Callable[[], object]],
    repeats: int,
    inner: int,
    warmup: int = 10,
    settle: float = SETTLE_S,
) -> dict[str, float]:
    """Median milliseconds per call of each function, the repeats interleaved across them."""
    samples: dict[str, list[float]] = {k: [] for k in fns}
    for f in fns.values():  # warm-up: allocators, oneDNN primitives, ONNX Runtime arenas
        for _ in range(warmup):
            f()
    for _ in range(repeats):
        for k, f in fns.items():
            time.sleep(settle)
            t0 = time.perf_counter()
            for _ in range(inner):
                f()
            samples[k].append((time.perf_counter() - t0) / inner * 1e3)
    return {k: statistics.median(v) for k, v in samples.items()}


@functools.cache
def _splits(size: int):
    from shared.lab.datasets import load_dataset

    return load_dataset("digits", size, seed=0)


def digits(ckpt: Checkpoint, split: str = "test", limit: int | None = None):
    """(normalised images, labels) of a split of the bundled digits at the model's input size:
    ``test`` is the held-out set (450 images) the model never saw; ``train`` serves as
    calibration data."""
    from shared.transforms import normalize

    data = getattr(_splits(ckpt.meta.input_size), split)
    n = len(data) if limit is None else min(limit, len(data))
    images = torch.stack([data[i][0] for i in range(n)])
    labels = torch.tensor([int(data[i][1]) for i in range(n)])
    return normalize(images, ckpt.meta.mean, ckpt.meta.std), labels


def session(path: Path, threads: int, **options) -> Callable:
    """An ONNX Runtime session set up as the node and the worker set up their own
    (:func:`shared.onnx_halves.session`), returned as a function of the input array giving
    every output. ``options`` are set on the ``SessionOptions`` (e.g.
    ``enable_profiling=True``)."""
    s = onnx_session(path, threads, **options)
    name = s.get_inputs()[0].name

    def run(x):
        return s.run(None, {name: x})

    run.session = s  # for end_profiling()
    return run


def bench_message(ckpt: Checkpoint, act, block: int, encoding: str, frame_id: int = 1) -> bytes:
    """A node's activation message for ``act`` at ``block`` (a fixed device id and capture
    time: the benchmarks measure its size and codec, not its content)."""
    from shared.protocol import encode_activation

    return encode_activation(
        device_id="bench",
        frame_id=frame_id,
        captured_at=0.0,
        split_block=block,
        model_hash=ckpt.hash,
        exit_confidence=0.5,
        exit_class=0,
        tensor=act,
        encoding=encoding,
    )


def fill_template(folder: Path, name: str, /, **values: object) -> str:
    """Template ``folder/name`` with every placeholder filled (a missing one raises
    ``KeyError``).

    A part goes into a line of the text around it, which supplies the newline, so the part's
    own last newline (the end of its file) is dropped; a page (``page.md``) keeps it.
    """
    text = string.Template((folder / name).read_text()).substitute(values)
    return text if name == "page.md" else text.removesuffix("\n")
