"""Node-side performance, measured side by side in one run: edge compute per split and backend,
bytes on the wire per split and encoding (against the JPEG and PNG of the same frame, with the
accuracy each encoding costs), and codec time. Writes docs/benchmarks.md with the bandit's, the
workers' and the end-to-end tables (bench/bench_bandit.py, bench/bench_worker.py,
bench/bench_pipeline.py) beside them.

    python bench/bench_perf.py --model models/digits.pt --out docs/benchmarks.md   # make bench

Timings are medians over repeats interleaved across the variants being compared, so a burst of
load elsewhere on this shared machine hits every variant alike; ratios are within one run.
"""

from __future__ import annotations

import argparse
import copy
import json
import platform
import statistics
import subprocess
import sys
import tempfile
import time
import zlib
from pathlib import Path

import cv2
import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from device.backend import OnnxEdge, TorchEdge  # noqa: E402
from shared.checkpoint import Checkpoint, load_checkpoint  # noqa: E402
from shared.lab.report import format_table  # noqa: E402
from shared.model import MultiExitMobileNetV2  # noqa: E402
from shared.protocol import decode_activation, encode_activation  # noqa: E402

THREADS = 2


def _median_ms(fns: dict[str, callable], repeats: int, inner: int) -> dict[str, float]:
    samples: dict[str, list[float]] = {k: [] for k in fns}
    for f in fns.values():  # warm-up: allocators, oneDNN primitives, ONNX Runtime arenas
        for _ in range(10):
            f()
    for _ in range(repeats):
        for k, f in fns.items():
            t0 = time.perf_counter()
            for _ in range(inner):
                f()
            samples[k].append((time.perf_counter() - t0) / inner * 1e3)
    return {k: statistics.median(v) for k, v in samples.items()}


class _Script:
    """TorchScript (trace) of one split's edge half."""

    def __init__(self, model, block: int, x: torch.Tensor) -> None:
        from device.backend import _EdgeHalf

        with torch.inference_mode():
            self.fn = torch.jit.trace(_EdgeHalf(model, block).eval(), (x,), check_trace=False)
            self.fn = torch.jit.freeze(self.fn)

    def __call__(self, x):
        with torch.inference_mode():
            return self.fn(x)


def _time_block(model, cl_model, onnx, x, block: int, repeats: int, size: int) -> dict:
    """One split's edge half on every variant, interleaved."""
    script = _Script(model, block, x)
    xn = x.numpy()
    x_cl = x.contiguous(memory_format=torch.channels_last)

    def eager():
        with torch.inference_mode():
            model.edge(x, block)

    def channels_last():
        with torch.inference_mode():
            cl_model.edge(x_cl, block)

    return _median_ms(
        {
            "eager": eager,
            "channels_last": channels_last,
            "torchscript": lambda: script(x),
            "onnxruntime": lambda: onnx(xn, block),
        },
        repeats,
        inner=20 if size < 100 else 5,
    )


def edge_table(ckpt: Checkpoint, repeats: int) -> tuple[list[list[str]], list[str]]:
    """Edge half per split: eager, channels_last, TorchScript, ONNX Runtime; 32 px and 224 px."""
    rows, notes = [], []
    big = MultiExitMobileNetV2(num_classes=10, exit_blocks=ckpt.meta.exit_blocks).eval()
    cases = [(ckpt.model.eval(), ckpt.meta.input_size, ckpt), (big, 224, None)]
    with tempfile.TemporaryDirectory() as tmp:
        for model, size, real in cases:
            if real is None:  # a checkpoint-shaped wrapper for the export (weights don't matter)
                from shared.checkpoint import ModelMeta

                meta = ckpt.meta.model_copy(update={"input_size": size})
                real = Checkpoint(
                    model, ModelMeta.model_validate(meta.model_dump()), "f" * 64, Path("bench")
                )
            onnx = OnnxEdge(real, Path(tmp), threads=THREADS)
            torch_edge = TorchEdge(real)
            cl_model = copy.deepcopy(model).to(memory_format=torch.channels_last)
            x = torch.rand(1, 3, size, size)
            xn = x.numpy()
            for block in ckpt.meta.arm_blocks:
                ms = _time_block(model, cl_model, onnx, x, block, repeats, size)
                ref_act, ref_logits = torch_edge(xn, block)
                act, logits = onnx(xn, block)
                diff = max(
                    float(np.abs(a - b).max())
                    for a, b in zip([act, *logits], [ref_act, *ref_logits], strict=True)
                )
                rows.append(
                    [
                        str(size),
                        str(block),
                        f"{ms['eager']:.3f}",
                        f"{ms['eager'] / ms['channels_last']:.2f}",
                        f"{ms['eager'] / ms['torchscript']:.2f}",
                        f"{ms['eager'] / ms['onnxruntime']:.2f}",
                        f"{diff:.1e}",
                    ]
                )
    notes.append(
        "int8 quantization of the edge half and torch.compile were not measured in this run."
    )
    return rows, notes


def bytes_table(ckpt: Checkpoint) -> list[list[str]]:
    """Payload bytes per split and encoding vs the JPEG (q90) and PNG of the same frame, and the
    accuracy change of the final prediction each encoding causes on the held-out digits."""
    from shared.lab.clips import FRAME_SIZE
    from shared.lab.datasets import load_dataset
    from shared.transforms import normalize

    test = load_dataset("digits", ckpt.meta.input_size, seed=0).test
    images = torch.stack([test[i][0] for i in range(len(test))])
    labels = torch.tensor([int(test[i][1]) for i in range(len(test))])
    x = normalize(images, ckpt.meta.mean, ckpt.meta.std)
    frames = load_dataset("digits", FRAME_SIZE, seed=0).test
    jpeg = png = 0
    for i in range(len(frames)):
        f = (frames[i][0].permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
        jpeg += len(cv2.imencode(".jpg", f, [cv2.IMWRITE_JPEG_QUALITY, 90])[1])
        png += len(cv2.imencode(".png", f)[1])
    jpeg, png = jpeg / len(frames), png / len(frames)
    rows = []
    with torch.inference_mode():
        final = ckpt.model(x)[-1].argmax(1)
        base_acc = float((final == labels).float().mean())
        for block in ckpt.meta.arm_blocks[:-1]:
            act = ckpt.model.edge(x, block).activation
            sizes, changes = {}, {}
            for enc in ("fp32", "fp16", "int8"):
                decoded, total = [], 0
                for i in range(len(act)):
                    payload = encode_activation(
                        device_id="bench",
                        frame_id=i,
                        captured_at=0.0,
                        split_block=block,
                        model_hash=ckpt.hash,
                        exit_confidence=0.5,
                        exit_class=0,
                        tensor=act[i].numpy(),
                        encoding=enc,
                    )
                    total += len(payload)
                    if enc == "int8":
                        sizes["int8+deflate"] = sizes.get("int8+deflate", 0) + len(
                            zlib.compress(payload, 1)
                        )
                    decoded.append(torch.from_numpy(decode_activation(payload).array()))
                sizes[enc] = total
                pred = ckpt.model.cloud(torch.stack(decoded), block).argmax(1)
                changes[enc] = 100 * (float((pred == labels).float().mean()) - base_acc)
            n = len(act)
            rows.append(
                [
                    str(block),
                    f"{sizes['fp32'] / n:.0f}",
                    f"{sizes['fp16'] / n:.0f}",
                    f"{sizes['int8'] / n:.0f}",
                    f"{sizes['int8+deflate'] / n:.0f}",
                    f"{sizes['int8'] / sizes['fp32']:.3f}",
                    f"{jpeg:.0f} / {png:.0f}",
                    f"{changes['fp16']:+.2f} / {changes['int8']:+.2f}",
                ]
            )
    return rows


def codec_table(ckpt: Checkpoint, repeats: int) -> list[list[str]]:
    rows = []
    x = torch.rand(1, 3, ckpt.meta.input_size, ckpt.meta.input_size)
    with torch.inference_mode():
        acts = {b: ckpt.model.edge(x, b).activation[0].numpy() for b in ckpt.meta.arm_blocks[:-1]}
    for block, act in acts.items():
        fns = {}
        for enc in ("fp32", "fp16", "int8"):

            def round_trip(a=act, e=enc, b=block):
                decode_activation(
                    encode_activation(
                        device_id="bench",
                        frame_id=1,
                        captured_at=0.0,
                        split_block=b,
                        model_hash=ckpt.hash,
                        exit_confidence=0.5,
                        exit_class=0,
                        tensor=a,
                        encoding=e,
                    )
                ).array()

            fns[enc] = round_trip
        ms = _median_ms(fns, repeats, inner=200)
        rows.append([str(block), str(act.size)] + [f"{ms[e] * 1e3:.1f}" for e in fns])
    return rows


def _run(cmd: list[str]) -> str:
    out = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    if out.returncode != 0:
        return f"(failed: {out.stderr[-500:]})"
    return out.stdout


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--model", type=Path, default=ROOT / "models" / "digits.pt")
    p.add_argument("--repeats", type=int, default=15)
    p.add_argument("--out", type=Path, help="write docs/benchmarks.md here")
    p.add_argument("--skip-pipeline", action="store_true", help="no end-to-end run")
    args = p.parse_args(argv)
    torch.set_num_threads(THREADS)
    ckpt = load_checkpoint(args.model)
    edge_rows, notes = edge_table(ckpt, args.repeats)
    edge_md = format_table(
        [
            "input px",
            "split block",
            "eager ms",
            "x channels_last",
            "x TorchScript",
            "x ONNX Runtime",
            "ONNX max diff",
        ],
        edge_rows,
    )
    bytes_md = format_table(
        [
            "split block",
            "fp32 B",
            "fp16 B",
            "int8 B",
            "int8+deflate B",
            "int8 / fp32",
            "frame JPEG q90 / PNG B",
            "accuracy change fp16 / int8 (points)",
        ],
        bytes_table(ckpt),
    )
    codec_md = format_table(
        ["split block", "elements", "fp32 us", "fp16 us", "int8 us"], codec_table(ckpt, 7)
    )
    for title, md in (("edge", edge_md), ("bytes", bytes_md), ("codec", codec_md)):
        print(f"\n{title}\n{md}")
    if not args.out:
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        bandit_md = Path(tmp) / "bandit.md"
        _run([sys.executable, "bench/bench_bandit.py", "--out", str(bandit_md)])
        bandit = bandit_md.read_text().split("\n", 2)[2] if bandit_md.exists() else "(failed)"
        pipeline = workers = "(not run)"
        if not args.skip_pipeline:
            from bench.bench_worker import worker_table

            workers = worker_table(args.model)
            pj = Path(tmp) / "pipeline.json"
            table = _run(
                [
                    sys.executable,
                    "bench/bench_pipeline.py",
                    "--model",
                    str(args.model),
                    "--json",
                    str(pj),
                ]
            )
            pipeline = table.strip()
            if pj.exists():
                s = json.loads(pj.read_text())
                cloud = s["latency_ms"].get("cloud", {})
                bare = s["bare_request_reply_ms"]
                pipeline += (
                    f"\n\nCloud-answered frames: p50 {cloud.get('p50', float('nan')):.2f} ms "
                    f"capture → result, against {bare['p50']:.2f} ms for a bare paho "
                    f"request/reply: the overhead target (≤ 2 ms p50 beyond edge and cloud "
                    f"compute) is judged on these two figures and the edge/cloud compute above."
                )
    machine = f"{platform.machine()}, {THREADS} torch threads, Python {platform.python_version()}"
    page = [
        "# Benchmarks",
        "",
        "Command: `make bench` (`python bench/bench_perf.py --model models/digits.pt "
        f"--out docs/benchmarks.md`), on {machine}. Timings are medians over interleaved "
        "repeats; ratios are against eager PyTorch in the same run.",
        "",
        "## Edge half per split (batch 1)",
        "",
        edge_md,
        "",
        *notes,
        "",
        "## Bytes per offload and what each encoding costs",
        "",
        "Mean message bytes per frame over the held-out digits (450 images), against the JPEG "
        "and PNG of the camera frame (64 px); accuracy change of the final prediction against "
        "the fp32 split, in points.",
        "",
        bytes_md,
        "",
        "## Codec: encode + decode one activation",
        "",
        codec_md,
        "",
        bandit.strip(),
        "",
        "## Cloud worker: micro-batching and a second worker",
        "",
        "`python bench/bench_worker.py`: activations per second answered by real workers, "
        "simulated nodes keeping activations in flight (block 3, fp16).",
        "",
        workers,
        "",
        "## End to end on loopback (1 node, 1 worker)",
        "",
        pipeline,
        "",
    ]
    args.out.write_text("\n".join(page))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
