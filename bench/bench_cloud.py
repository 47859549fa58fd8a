"""The worker's cloud half per split: eager PyTorch against an ONNX Runtime export of the same
half with a dynamic batch axis (what the worker runs by default), at batch 1 and batch 8.

    python bench/bench_cloud.py --model models/digits.pt            # every split; ~1 min
    python bench/bench_cloud.py --model models/digits.pt --quick    # block 3; seconds

One thread each (the workers in these benchmarks run ``--threads 1``), medians over repeats
interleaved across the four variants. Exactness: the largest difference of the final logits
over the held-out digits' real activations at that split (450 images, one batch), and how many
final predictions change.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

from common import digits, median_ms, session
from shared.checkpoint import Checkpoint, load_checkpoint
from shared.lab.report import format_table
from shared.onnx_halves import CloudHalf, export

ROOT = Path(__file__).resolve().parent.parent

THREADS = 1


def measure(ckpt: Checkpoint, blocks: list[int], repeats: int, tmp: Path) -> list[dict]:
    model = ckpt.model.eval()
    x, _ = digits(ckpt, "test")
    out = []
    for block in blocks:
        with torch.inference_mode():
            acts = model.edge(x, block).activation
        path = tmp / f"cloud-{block}.onnx"
        export(CloudHalf(model, block), acts[:1].clone(), path, dynamic_batch=True)
        ort = session(path, threads=THREADS)
        a1, a8 = acts[:1].clone(), acts[:8].clone()
        n1, n8 = a1.numpy(), a8.numpy()

        def eager(a: torch.Tensor, b: int = block) -> torch.Tensor:
            with torch.inference_mode():
                return model.cloud(a, b)

        ms = median_ms(
            {
                "eager b1": lambda e=eager, a=a1: e(a),
                "ORT b1": lambda o=ort, a=n1: o(a),
                "eager b8": lambda e=eager, a=a8: e(a),
                "ORT b8": lambda o=ort, a=n8: o(a),
            },
            repeats,
            inner=10,
        )
        ref = eager(acts).numpy()
        got = ort(acts.numpy())[0]
        out.append(
            {
                "block": block,
                **ms,
                "max_diff": float(np.abs(got - ref).max()),
                "changed": int((got.argmax(1) != ref.argmax(1)).sum()),
                "images": len(acts),
            }
        )
    return out


def cloud_table(model: Path, quick: bool = False, repeats: int = 15) -> tuple[str, list[dict]]:
    ckpt = load_checkpoint(model)
    blocks = [3] if quick else list(ckpt.meta.arm_blocks[:-1])
    threads = torch.get_num_threads()
    torch.set_num_threads(THREADS)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            figs = measure(ckpt, blocks, 3 if quick else repeats, Path(tmp))
    finally:
        torch.set_num_threads(threads)
    rows = [
        [
            str(f["block"]),
            f"{f['eager b1']:.3f}",
            f"{f['ORT b1']:.3f}",
            f"{f['eager b1'] / f['ORT b1']:.2f}",
            f"{f['eager b8']:.3f}",
            f"{f['ORT b8']:.3f}",
            f"{f['eager b8'] / f['ORT b8']:.2f}",
            f"{f['max_diff']:.1e}",
            f"{f['changed']} / {f['images']}",
        ]
        for f in figs
    ]
    table = format_table(
        [
            "split block",
            "eager b1 ms",
            "ORT b1 ms",
            "x ORT b1",
            "eager b8 ms",
            "ORT b8 ms",
            "x ORT b8",
            "max diff",
            "predictions changed",
        ],
        rows,
    )
    pays = [f["block"] for f in figs if f["eager b1"] > f["ORT b1"] and f["eager b8"] > f["ORT b8"]]
    exact = all(f["max_diff"] <= 1e-4 for f in figs)
    note = (
        f"ONNX Runtime is faster at batch 1 and 8 at split(s) {', '.join(map(str, pays)) or 'none'}"
        f" of {', '.join(str(f['block']) for f in figs)}, "
        + ("within 1e-4 everywhere" if exact else "not within 1e-4 everywhere")
        + "; the worker runs its cloud half on ONNX Runtime by default since this table "
        "(`backend = auto`, cloud_worker/backend.py), PyTorch where ONNX Runtime is missing or "
        "inexact."
    )
    return f"{table}\n\n{note}", figs


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--model", type=Path, default=ROOT / "models" / "digits.pt")
    p.add_argument("--quick", action="store_true", help="block 3 only, 3 repeats")
    p.add_argument("--repeats", type=int, default=15)
    args = p.parse_args(argv)
    print(cloud_table(args.model, args.quick, args.repeats)[0])
    return 0


if __name__ == "__main__":
    sys.exit(main())
