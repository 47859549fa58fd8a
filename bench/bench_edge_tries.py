"""The edge-half tries beyond the edge table: torch.compile, and int8 quantisation of the exported
edge half with ONNX Runtime (dynamic and static), against eager PyTorch and against the node's
default backend (ONNX Runtime fp32) measured in the same run.

    python bench/bench_edge_tries.py --model models/digits.pt            # every split; ~5 min
    python bench/bench_edge_tries.py --model models/digits.pt --quick    # block 3; seconds

Speed: batch 1, medians over interleaved repeats, 2 threads (as the edge table). Exactness: the
largest difference from eager PyTorch, over the held-out digits (450 images), of any output the
node uses (the activation and every exit's logits); a node accepts a backend only within 1e-4
(``device.backend.TOLERANCE``). Accuracy: the final prediction when that edge half's activation
feeds the fp32 cloud half, against the all-fp32 eager model, in points.

int8 static: QDQ, per-channel int8 weights, uint8 activations calibrated (min-max) on 200 training
images; int8 dynamic: int8 weights, activations quantised per call. torch.compile (Inductor) runs
in a child process of its own under a time limit, timed there against eager and ONNX Runtime fp32
in that same process; a failure or a timeout is reported in the table, not raised. ``--quick``
uses Dynamo's ``eager`` backend (graph capture only, no C++ compile) so the test suite covers the
whole path in seconds.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

from common import digits, median_ms, session
from shared.checkpoint import Checkpoint, load_checkpoint
from shared.lab.report import format_table
from shared.onnx_halves import TOLERANCE, EdgeHalf, export

ROOT = Path(__file__).resolve().parent.parent

THREADS = 2
VARIANTS = ("torch.compile", "ORT int8 dynamic", "ORT int8 static")


def eager_fn(model, block: int):
    def run(x: np.ndarray) -> list[np.ndarray]:
        with torch.inference_mode():
            out = model.edge(torch.from_numpy(x), block)
        return [out.activation.numpy(), *(t.numpy() for t in out.logits)]

    return run


def judge(ckpt: Checkpoint, block: int, fn, x: torch.Tensor, labels: torch.Tensor, ref) -> dict:
    """Max difference from eager over the held-out images, and the accuracy change of the final
    prediction when ``fn``'s activation feeds the fp32 cloud half."""
    ref_outs, ref_acc = ref
    diff, acts = 0.0, []
    for i in range(len(x)):
        outs = fn(x[i : i + 1].numpy())
        acts.append(torch.from_numpy(np.ascontiguousarray(outs[0])))
        pairs = zip(outs, ref_outs[i], strict=True)
        diff = max(diff, *(float(np.abs(a - b).max()) for a, b in pairs))
    with torch.inference_mode():
        pred = ckpt.model.cloud(torch.cat(acts), block).argmax(1)
    acc = float((pred == labels).float().mean())
    return {"max_diff": diff, "acc_change": 100 * (acc - ref_acc)}


def reference(ckpt: Checkpoint, block: int, x: torch.Tensor, labels: torch.Tensor):
    fn = eager_fn(ckpt.model, block)
    outs = [fn(x[i : i + 1].numpy()) for i in range(len(x))]
    with torch.inference_mode():
        pred = ckpt.model.cloud(torch.from_numpy(np.concatenate([o[0] for o in outs])), block)
    return outs, float((pred.argmax(1) == labels).float().mean())


def quantise(fp32: Path, calib: torch.Tensor, where: Path) -> dict[str, Path | str]:
    """int8 dynamic and static versions of an exported edge half (or why one failed)."""
    import onnx
    from onnxruntime.quantization import (
        CalibrationDataReader,
        QuantFormat,
        QuantType,
        quant_pre_process,
        quantize_dynamic,
        quantize_static,
    )

    out: dict[str, Path | str] = {}
    pre = where / f"{fp32.stem}-pre.onnx"
    quant_pre_process(str(fp32), str(pre))  # shape inference and folding, as ORT advises
    try:
        dyn = where / f"{fp32.stem}-int8-dynamic.onnx"
        quantize_dynamic(pre, dyn, weight_type=QuantType.QInt8)
        out["ORT int8 dynamic"] = dyn
    except Exception as exc:
        out["ORT int8 dynamic"] = f"failed: {type(exc).__name__}: {exc}"[:120]
    try:
        static = where / f"{fp32.stem}-int8-static.onnx"
        name = onnx.load(str(pre)).graph.input[0].name

        class Calibration(CalibrationDataReader):
            """Training images, one at a time."""

            def __init__(self) -> None:
                self._it = iter([{name: calib[i : i + 1].numpy()} for i in range(len(calib))])

            def get_next(self):
                return next(self._it, None)

        reader = Calibration()
        quantize_static(
            pre,
            static,
            reader,
            quant_format=QuantFormat.QDQ,
            per_channel=True,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
        )
        out["ORT int8 static"] = static
    except Exception as exc:
        out["ORT int8 static"] = f"failed: {type(exc).__name__}: {exc}"[:120]
    return out


def measure(
    ckpt: Checkpoint, blocks: list[int], repeats: int, tmp: Path, limit: int | None = None
) -> dict[int, dict]:
    """Per split: ms of eager and ORT fp32, and per int8 variant its ms, diff, accuracy change."""
    x, labels = digits(ckpt, "test", limit)
    calib, _ = digits(ckpt, "train", limit=200)
    size = ckpt.meta.input_size
    out: dict[int, dict] = {}
    for block in blocks:
        fp32 = tmp / f"edge-{block}.onnx"
        export(EdgeHalf(ckpt.model.eval(), block), torch.zeros(1, 3, size, size), fp32)
        fns = {"eager": eager_fn(ckpt.model, block), "ORT fp32": session(fp32, THREADS)}
        row: dict = {}
        root = logging.getLogger()
        level, root.level = root.level, logging.ERROR  # the quantisers' advice, on the root logger
        try:
            made_all = quantise(fp32, calib, tmp)
        finally:
            root.setLevel(level)
        for name, made in made_all.items():
            if isinstance(made, str):
                row[name] = {"failed": made}
                continue
            try:
                fns[name] = session(made, THREADS)
            except Exception as exc:
                row[name] = {"failed": f"failed: {type(exc).__name__}: {exc}"[:120]}
        probe = x[:1].numpy()
        ms = median_ms({k: (lambda f=f, p=probe: f(p)) for k, f in fns.items()}, repeats, 20)
        ref = reference(ckpt, block, x, labels)
        row["eager"], row["ORT fp32"] = {"ms": ms["eager"]}, {"ms": ms["ORT fp32"]}
        row["ORT fp32"].update(judge(ckpt, block, fns["ORT fp32"], x, labels, ref))
        for name in fns.keys() - {"eager", "ORT fp32"}:
            row[name] = {"ms": ms[name], **judge(ckpt, block, fns[name], x, labels, ref)}
        row["images"] = len(x)
        out[block] = row
    return out


# -- torch.compile, in a child process -----------------------------------------------------------


def compile_child(
    model: Path, blocks: list[int], repeats: int, backend: str, limit: int | None
) -> None:
    """Prints one JSON line per split: eager, ORT fp32 and compiled ms (interleaved, in this
    process), first-call (compile) seconds, max difference and accuracy change; or why that
    split could not be compiled."""
    torch.set_num_threads(THREADS)
    ckpt = load_checkpoint(model)
    x, labels = digits(ckpt, "test", limit)
    with tempfile.TemporaryDirectory() as tmp:
        for block in blocks:
            try:
                line = _compile_one(ckpt, block, x, labels, repeats, backend, Path(tmp))
            except Exception as exc:
                line = {"block": block, "failed": f"failed: {type(exc).__name__}: {exc}"[:150]}
            print(json.dumps(line), flush=True)


def _compile_one(ckpt, block, x, labels, repeats: int, backend: str, tmp: Path) -> dict:
    import time

    import torch._dynamo

    size = ckpt.meta.input_size
    path = tmp / f"edge-{block}.onnx"
    export(EdgeHalf(ckpt.model.eval(), block), torch.zeros(1, 3, size, size), path)
    ort_fp32 = session(path, THREADS)
    # Every split is a new graph of the same forward code: without a reset Dynamo reaches its
    # recompile limit after a few splits and silently runs the rest eagerly. fullgraph: the
    # whole edge half must be one graph, or the split fails instead of running half eager.
    torch._dynamo.reset()
    torch._dynamo.utils.counters.clear()
    half = EdgeHalf(ckpt.model.eval(), block).eval()
    compiled = torch.compile(half, backend=backend, dynamic=False, fullgraph=True)
    probe = x[:1].contiguous()
    started = time.perf_counter()
    with torch.inference_mode():
        compiled(probe)
    first_s = time.perf_counter() - started
    if not torch._dynamo.utils.counters["stats"]["unique_graphs"]:
        raise RuntimeError("Dynamo captured no graph")

    def run_compiled(xn: np.ndarray, c=compiled) -> list[np.ndarray]:
        with torch.inference_mode():
            return [t.numpy() for t in c(torch.from_numpy(xn))]

    eager = eager_fn(ckpt.model, block)
    pn = probe.numpy()
    ms = median_ms(
        {
            "eager": lambda e=eager, p=pn: e(p),
            "ORT fp32": lambda o=ort_fp32, p=pn: o(p),
            "compiled": lambda r=run_compiled, p=pn: r(p),
        },
        repeats,
        inner=20,
    )
    ref = reference(ckpt, block, x, labels)
    line = {"block": block, "first_call_s": first_s, **ms}
    line.update(judge(ckpt, block, run_compiled, x, labels, ref))
    return line


def compile_results(
    model: Path, blocks: list[int], repeats: int, backend: str, timeout: float, limit: int | None
) -> tuple[dict[int, dict], str | None]:
    """What the child measured per split, and why it stopped early (None if it did not)."""
    cmd = [
        sys.executable,
        __file__,
        "--model",
        str(model),
        "--compile-child",
        backend,
        "--blocks",
        ",".join(map(str, blocks)),
        "--repeats",
        str(repeats),
    ]
    if limit:
        cmd += ["--limit", str(limit)]
    env = {**os.environ, "TORCHINDUCTOR_COMPILE_THREADS": "1"}  # no compile pool on 2 cores
    proc = subprocess.Popen(
        cmd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        start_new_session=True,
    )
    reason = None
    try:
        out, err = proc.communicate(timeout=timeout)
        if proc.returncode != 0:
            last = [ln for ln in err.strip().splitlines() if ln.strip()][-1:] or ["(no message)"]
            reason = f"failed: exit {proc.returncode}: {last[0][:150]}"
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)  # the child and anything it started
        out, _ = proc.communicate()
        reason = f"failed: not done after {timeout:.0f} s"
    done = {}
    for line in out.splitlines():
        if line.startswith("{"):
            d = json.loads(line)
            done[d["block"]] = d
    return done, reason


# -- the table -----------------------------------------------------------------------------------


def _cell(r: dict, base: float, ort: float) -> str:
    if "failed" in r:
        return r["failed"]
    return (
        f"{base / r['ms']:.2f}x / {ort / r['ms']:.2f}x, {r['max_diff']:.1e}, {r['acc_change']:+.2f}"
    )


def _with_compiled(f: dict, c: dict | None, reason: str | None) -> dict | None:
    """Record the compile child's figures for a split in ``f`` (``torch.compile``: its time,
    or why it failed); its line if it measured the split, else None."""
    if c is None or "failed" in c:
        f["torch.compile"] = {"failed": (c or {}).get("failed") or reason or "failed: no result"}
        return None
    # Its own process: ratios against the eager and ORT fp32 timed beside it there.
    f["torch.compile"] = {
        "ms": c["compiled"],
        "max_diff": c["max_diff"],
        "acc_change": c["acc_change"],
    }
    return c


def _split_row(block: int, f: dict, c: dict | None) -> list[str]:
    """A split's row: eager time, ONNX Runtime fp32 against it, then a cell per variant."""
    eager, ort = f["eager"]["ms"], f["ORT fp32"]["ms"]
    cells = [
        _cell(
            f[v],
            c["eager"] if c and v == "torch.compile" else eager,
            c["ORT fp32"] if c and v == "torch.compile" else ort,
        )
        for v in VARIANTS
    ]
    return [
        str(block),
        f"{eager:.3f}",
        f"{eager / ort:.2f}x, {f['ORT fp32']['max_diff']:.1e}",
        *cells,
    ]


def _winners(block: int, f: dict, c: dict | None) -> list[str]:
    """The variants faster than ONNX Runtime fp32 at this split and within the tolerance."""
    ort = f["ORT fp32"]["ms"]
    out = []
    for v in VARIANTS:
        r = f[v]
        if "failed" in r:
            continue
        faster = (c["ORT fp32"] if v == "torch.compile" else ort) > r["ms"]
        if faster and r["max_diff"] <= TOLERANCE:
            out.append(f"{v} at block {block}")
    return out


def _notes(
    quick: bool,
    n_images: int,
    first: list[float],
    reason: str | None,
    any_compiled: bool,
    verdicts: list[str],
) -> list[str]:
    """What the cells mean and how torch.compile ran, then the verdict."""
    backend_note = (
        "torch.compile here is Dynamo's `eager` backend (--quick)"
        if quick
        else "torch.compile is Inductor, default mode"
    )
    return [
        "Cells: speed vs eager / vs ONNX Runtime fp32 (the node's default), max difference "
        f"from eager over the {n_images} held-out digits (activation and exits' logits), accuracy "
        "change of the final prediction with the fp32 cloud half (points). "
        f"{backend_note}; its ratios are against eager and ORT fp32 timed in its own process"
        + (f"; first call (compile): median {np.median(first):.1f} s per split" if first else "")
        + (f"; {reason}" if reason and any_compiled else "")
        + ".",
        (
            "Faster than ORT fp32 and within 1e-4: "
            + ", ".join(verdicts)
            + " (not made the node's default here: see the report)."
            if verdicts
            else "None of these is both faster than ONNX Runtime fp32 and within 1e-4 of "
            "eager: the node's default stays ONNX Runtime fp32."
        ),
    ]


def tries_table(
    model: Path, quick: bool = False, repeats: int = 15, compile_timeout: float = 900.0
) -> tuple[str, dict]:
    """The Markdown table and its figures."""
    torch.set_num_threads(THREADS)
    ckpt = load_checkpoint(model)
    blocks = [3] if quick else list(ckpt.meta.arm_blocks)
    repeats = 3 if quick else repeats
    backend = "eager" if quick else "inductor"
    limit = 60 if quick else None  # --quick: a few held-out images, the path not the figure
    with tempfile.TemporaryDirectory() as tmp:
        figures = measure(ckpt, blocks, repeats, Path(tmp), limit)
    compiled, reason = compile_results(model, blocks, repeats, backend, compile_timeout, limit)
    rows, verdicts, first = [], [], []
    for block in blocks:
        f = figures[block]
        c = _with_compiled(f, compiled.get(block), reason)
        if c is not None:
            first.append(c["first_call_s"])
        rows.append(_split_row(block, f, c))
        verdicts += _winners(block, f, c)
    table = format_table(["split block", "eager ms", "ORT fp32 (node default)", *VARIANTS], rows)
    n_images = figures[blocks[0]]["images"]
    notes = _notes(quick, n_images, first, reason, bool(compiled), verdicts)
    return table + "\n\n" + "\n\n".join(notes), {"blocks": figures, "winners": verdicts}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--model", type=Path, default=ROOT / "models" / "digits.pt")
    p.add_argument("--quick", action="store_true", help="block 3 only, 3 repeats")
    p.add_argument("--repeats", type=int, default=15)
    p.add_argument("--compile-timeout", type=float, default=900.0)
    p.add_argument("--compile-child", metavar="BACKEND", help=argparse.SUPPRESS)
    p.add_argument("--blocks", help=argparse.SUPPRESS)
    p.add_argument("--limit", type=int, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.compile_child:
        blocks = [int(b) for b in args.blocks.split(",")]
        compile_child(args.model, blocks, args.repeats, args.compile_child, args.limit)
        return 0
    table, _ = tries_table(args.model, args.quick, args.repeats, args.compile_timeout)
    print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
