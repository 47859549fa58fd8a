"""Profiles for the targets the benchmark page reports as missed, generated here, not typed.

    python bench/bench_profile.py --model models/digits.pt            # 224 px block 3, bytes
    python bench/bench_profile.py --model models/digits.pt --quick    # 32 px block 3; seconds

- An edge split whose ONNX Runtime speed-up misses its target: where the time goes on each
  side, from the runtimes' own profilers (``torch.profiler`` for eager PyTorch, ONNX Runtime's
  session profiling), top operators by self time, and how much of each side's wall time is
  outside its kernels (Python and dispatch for eager, session overhead for ONNX Runtime). A
  Python profiler (cProfile, pyinstrument) would see one opaque call into C++ on the ONNX side,
  so the runtimes' profilers are the ones that can answer.
- int8 message size against fp32: the real encoded message (``shared.protocol``) taken apart
  field by field, header bytes against tensor bytes, and the header that would meet the target.
- A bandit policy over its time budget: cProfile of its decide + observe loop (pure Python).
"""

from __future__ import annotations

import argparse
import cProfile
import json
import math
import pstats
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import msgpack
import numpy as np
import torch

from common import SETTLE_S, bench_message, digits, median_ms, session
from shared.checkpoint import Checkpoint, load_checkpoint
from shared.lab.report import format_table
from shared.model import MultiExitMobileNetV2
from shared.onnx_halves import EdgeHalf, export
from shared.protocol import ACTIVATION_KEYS, MODEL_HASH_CHARS

ROOT = Path(__file__).resolve().parent.parent

THREADS = 2
INT8_TARGET = 0.27


# -- edge half: eager PyTorch against ONNX Runtime, operator by operator --------------------------


def _timed(fn, iters: int) -> float:
    for _ in range(10):
        fn()
    t0 = time.perf_counter()
    for _ in range(iters):
        fn()
    return (time.perf_counter() - t0) / iters * 1e3


def _eager_ops(model, x: torch.Tensor, block: int, iters: int):
    """(profiled ms per call, [(op, self ms per call, calls per call)]) from torch.profiler."""
    from torch.profiler import ProfilerActivity, profile

    with torch.inference_mode(), profile(activities=[ProfilerActivity.CPU]) as prof:
        profiled = _timed(lambda: model.edge(x, block), iters)
    n = iters + 10  # the profiled warm-up calls are in the profile too
    ops = [(e.key, e.self_cpu_time_total / 1e3 / n, e.count / n) for e in prof.key_averages()]
    return profiled, sorted(ops, key=lambda o: -o[1])


def _ort_ops(path: Path, x: np.ndarray, iters: int, tmp: Path):
    """The same two for ONNX Runtime, from its session profiler (a JSON trace); its profiled
    time per call is the trace's own ``model_run``."""
    prof = session(path, THREADS, enable_profiling=True, profile_file_prefix=str(tmp / "ort"))
    _timed(lambda: prof(x), iters)
    trace = json.loads(Path(prof.session.end_profiling()).read_text())
    runs = [e for e in trace if e.get("cat") == "Session" and e.get("name") == "model_run"]
    runs = runs[-iters:]  # not the warm-up calls
    by_op: dict[str, list[float]] = defaultdict(lambda: [0.0, 0])
    for e in trace:
        kernel = e.get("cat") == "Node" and e["name"].endswith("_kernel_time")
        if kernel and e["ts"] >= runs[0]["ts"]:
            op = e.get("args", {}).get("op_name", "?")
            by_op[op][0] += e["dur"] / 1e3 / len(runs)
            by_op[op][1] += 1 / len(runs)
    ops = sorted(((k, v[0], v[1]) for k, v in by_op.items()), key=lambda o: -o[1])
    return sum(r["dur"] for r in runs) / 1e3 / len(runs), ops


REGIMES = {
    "tight": "back to back: 20 calls of one runtime (after 5 more)",
    "settled": f"5 calls, {SETTLE_S * 1e3:.0f} ms after the last call (the edge table's timing)",
    "camera": "1 call, 33 ms after the last (a camera at 30 fps, as a node runs it)",
    "after other": "5 calls right after 5 of the other runtime (no pause)",
}


def _regimes(model, path: Path, x: torch.Tensor, block: int, repeats: int) -> dict:
    """Median ms per call of each runtime in each of ``REGIMES``, the repeats interleaved."""
    run, xn = session(path, THREADS), x.numpy()

    def eager() -> None:
        with torch.inference_mode():
            model.edge(x, block)

    fns = {"eager": eager, "ONNX Runtime": lambda: run(xn)}

    def per_call(fn, n: int) -> float:
        t0 = time.perf_counter()
        for _ in range(n):
            fn()
        return (time.perf_counter() - t0) / n * 1e3

    for fn in fns.values():
        per_call(fn, 10)
    out: dict[tuple[str, str], list[float]] = defaultdict(list)
    for _ in range(repeats):
        for name, fn in fns.items():
            time.sleep(SETTLE_S)
            per_call(fn, 5)
            out["tight", name].append(per_call(fn, 20))
            time.sleep(SETTLE_S)
            out["settled", name].append(per_call(fn, 5))
            for _ in range(3):
                time.sleep(1 / 30)
                out["camera", name].append(per_call(fn, 1))
        (a, fa), (b, fb) = fns.items()
        per_call(fa, 5)
        out["after other", b].append(per_call(fb, 5))
        per_call(fb, 5)
        out["after other", a].append(per_call(fa, 5))
    return {k: float(np.median(v)) for k, v in out.items()}


def edge_profile(ckpt: Checkpoint, size: int, block: int, iters: int = 50, top: int = 5) -> str:
    """Markdown: one split's edge half at ``size`` px, eager against ONNX Runtime: how their
    ratio depends on how the calls come, and each runtime's top operators."""
    torch.set_num_threads(THREADS)
    if size == ckpt.meta.input_size:
        model = ckpt.model.eval()
    else:  # the edge table's 224 px case: the same architecture, weights do not matter
        model = MultiExitMobileNetV2(num_classes=10, exit_blocks=ckpt.meta.exit_blocks).eval()
    x = torch.rand(1, 3, size, size)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"edge-{block}.onnx"
        export(EdgeHalf(model, block), x, path)
        reg = _regimes(model, path, x, block, repeats=15 if iters >= 50 else 3)
        time.sleep(SETTLE_S)
        e_prof, e_ops = _eager_ops(model, x, block, iters)
        time.sleep(SETTLE_S)
        o_prof, o_ops = _ort_ops(path, x.numpy(), iters, Path(tmp))
    regimes = format_table(
        ["how the calls come", "eager ms", "ONNX Runtime ms", "x ONNX Runtime"],
        [
            [
                text,
                f"{reg[k, 'eager']:.3f}",
                f"{reg[k, 'ONNX Runtime']:.3f}",
                f"{reg[k, 'eager'] / reg[k, 'ONNX Runtime']:.2f}",
            ]
            for k, text in REGIMES.items()
        ],
    )
    rows = []
    for side, ops, prof in (("eager", e_ops, e_prof), ("ONNX Runtime", o_ops, o_prof)):
        for name, ms, calls in ops[:top]:
            rows.append([side, name, f"{calls:.0f}", f"{ms:.3f}", f"{100 * ms / prof:.0f}"])
    ops_md = format_table(
        ["runtime", "operator", "calls per run", "self ms per run", "% of profiled run"], rows
    )

    def share(ops, prof: float, word: str) -> float:
        return 100 * sum(ms for name, ms, _ in ops if word in name.lower()) / prof

    def outside(ops, prof: float) -> float:
        return max(prof - sum(ms for _, ms, _ in ops), 0.0)

    return (
        f"{size} px, block {block}, {THREADS} threads. The same two runtimes, timed as the "
        f"calls come (medians):\n\n{regimes}\n\nProfiled ({iters} back-to-back runs, the "
        f"profilers' own overhead included: eager {e_prof:.3f} ms, ONNX Runtime {o_prof:.3f} "
        f"ms per run): convolutions are {share(e_ops, e_prof, 'conv'):.0f} % of eager's run "
        f"and {share(o_ops, o_prof, 'conv'):.0f} % of ONNX Runtime's; eager also runs its "
        f"batch norms apart ({share(e_ops, e_prof, 'batch_norm'):.0f} %; the export folds "
        f"them into the convolutions) and spends {outside(e_ops, e_prof):.3f} ms per run "
        f"outside its operators (Python, dispatch), ONNX Runtime {outside(o_ops, o_prof):.3f} "
        f"ms outside its kernels. Eager's operator times are self CPU time from "
        f"torch.profiler; ONNX Runtime's are its kernels' own times.\n\n{ops_md}"
    )


# -- int8 message size: header bytes against tensor bytes --------------------------------------


_FIELD_OF_KEY = {key: name for name, key in ACTIVATION_KEYS.items()}


def _fields(body: dict, prefix: str = "") -> list[tuple[str, int]]:
    """Bytes of each field of a msgpack map as packed (key and value), nested maps opened,
    named by field (``data (bytes)``, ``data (bin header)``: the tensor's bytes)."""
    out = [
        (
            f"{prefix}(map header)",
            len(msgpack.packb({k: None for k in body}))
            - len(body)
            - sum(len(msgpack.packb(k)) for k in body),
        )
    ]
    for key, value in body.items():
        name = f"{prefix}{_FIELD_OF_KEY.get(key, key)}"
        out.append((f"{name} (key)", len(msgpack.packb(key))))
        if isinstance(value, dict):
            out += _fields(value, f"{name}.")
        elif isinstance(value, bytes):
            out.append((f"{name} (bin header)", len(msgpack.packb(value)) - len(value)))
            out.append((f"{name} (bytes)", len(value)))
        else:
            out.append((name, len(msgpack.packb(value, use_bin_type=True))))
    return out


BREAKDOWN_HEADERS = [
    "split block",
    "elements",
    "int8 B = header + tensor",
    "fp32 B = header + tensor",
    "int8 / fp32",
    f"<= {INT8_TARGET}",
    "int8 header for <= 0.27 (fp32 as is) B",
    "header for <= 0.27 if both shrink alike B",
]


def _split_bytes(ckpt: Checkpoint, x: torch.Tensor, block: int) -> dict:
    """One split's int8 and fp32 messages of the activation of ``x``: their bytes, headers,
    elements, the int8 header each target reading needs, and the int8 message field by field."""
    with torch.inference_mode():
        act = ckpt.model.edge(x, block).activation[0].numpy()
    sizes = {}
    for enc in ("int8", "fp32"):
        payload = bench_message(ckpt, act, block, enc)
        fields = _fields(msgpack.unpackb(payload, raw=False))
        if sum(n for _, n in fields) != len(payload):
            raise AssertionError(f"field bytes do not add up to the {enc} message")
        data = dict(fields)["data (bytes)"]
        sizes[enc] = (len(payload), data, len(payload) - data, fields)
    (i8, i8_data, i8_head, fields), (f32, _, f32_head, _) = sizes["int8"], sizes["fp32"]
    return {
        "int8": i8,
        "fp32": f32,
        "int8_header": i8_head,
        "fp32_header": f32_head,
        "elements": int(act.size),
        # int8 header for <= 0.27 x this fp32
        "int8_header_needed": int(np.floor(INT8_TARGET * f32)) - i8_data,
        "common_header_needed": int(np.floor((INT8_TARGET * 4 - 1) * act.size / (1 - INT8_TARGET))),
        "fields": fields,
    }


def _breakdown_row(block: int, f: dict) -> list[str]:
    """A split's row of the table, from its :func:`_split_bytes` figures."""
    i8, f32, i8_head, f32_head = f["int8"], f["fp32"], f["int8_header"], f["fp32_header"]
    return [
        str(block),
        str(f["elements"]),
        f"{i8} = {i8_head} + {i8 - i8_head}",
        f"{f32} = {f32_head} + {f32 - f32_head}",
        f"{i8 / f32:.3f}",
        f"{'met' if i8 / f32 <= INT8_TARGET else 'missed'}",
        f"{f['int8_header_needed']}",
        f"{f['common_header_needed']}",
    ]


def _bytes_per_field(fields: list[tuple[str, int]]) -> dict[str, list[int]]:
    """Field -> [its key's bytes, its value's bytes] (the tensor's own bytes left out)."""
    per: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    for name, n in fields:
        if name.endswith(" (key)"):
            per[name.removesuffix(" (key)")][0] += n
        elif name != "data (bytes)":
            per[name.removesuffix(" (bin header)")][1] += n
    return per


def bytes_breakdown(ckpt: Checkpoint, blocks: list[int] | None = None) -> tuple[str, dict]:
    """Markdown: per split, the int8 and fp32 messages' header and tensor bytes and the int8
    header that would make int8 <= 0.27 x fp32; the field-by-field bytes of the first split."""
    blocks = blocks or list(ckpt.meta.arm_blocks[:-1])
    x, _ = digits(ckpt, "test", limit=1)
    figures = {block: _split_bytes(ckpt, x, block) for block in blocks}
    table = format_table(
        BREAKDOWN_HEADERS, [_breakdown_row(block, figures[block]) for block in blocks]
    )
    per = _bytes_per_field(figures[blocks[0]]["fields"])
    ordered = sorted(per.items(), key=lambda kv: -sum(kv[1]))
    keys = sum(v[0] for v in per.values())
    fields_md = format_table(
        [f"field (int8 message, block {blocks[0]})", "name B", "value B"],
        [[k, str(v[0]), str(v[1])] for k, v in ordered],
    )
    f = figures[blocks[0]]
    head, need = f["int8_header"], f["int8_header_needed"]
    # int8 = n + h and fp32 = 4n + h' reach the ratio r only when n >= (h - r h') / (4r - 1).
    floor = math.ceil((head - INT8_TARGET * f["fp32_header"]) / (4 * INT8_TARGET - 1))
    return (
        f"{table}\n\nThe int8 header of block {blocks[0]} ({head} B; {need} B would meet "
        f"{INT8_TARGET} against this fp32 message), field by field below: the keys take "
        f"{keys} B, the model hash (its first {MODEL_HASH_CHARS} hex digits) "
        f"{per['model_hash'][1]} B. With these headers an int8 message reaches {INT8_TARGET} "
        f"of its fp32 message only where the tensor has at least {floor} elements: the "
        f"header, not the tensor, sets the ratio at the deeper splits of a 32 px model (at "
        f"224 px every split's tensor is 49x larger).\n\n{fields_md}",
        figures,
    )


# -- pipeline overhead: what the messages cost to make and read ------------------------------


def message_costs_us(ckpt: Checkpoint, block: int = 3, encoding: str = "fp16") -> dict:
    """Microseconds (median) of each encode and decode on a cloud-answered frame's path, on a
    held-out digit's real activation: what of the pipeline overhead is serialisation."""
    from shared.protocol import (
        NUM_BLOCKS,
        Reply,
        Result,
        decode_activation,
        decode_reply,
        encode_reply,
        encode_result,
        iso_utc,
    )

    x, _ = digits(ckpt, "test", limit=1)
    with torch.inference_mode():
        act = ckpt.model.edge(x, block).activation[0].numpy()
    payload = bench_message(ckpt, act, block, encoding)
    reply = encode_reply(Reply(frame_id=1, worker_id="w", label=3, confidence=0.9, cloud_ms=4.0))
    result = Result(
        "bench", 1, 3, "3", 0.9, NUM_BLOCKS, block, "cloud", iso_utc(time.time()), 7.0, ckpt.hash
    )
    fns = {
        "node: encode the activation": lambda: bench_message(ckpt, act, block, encoding),
        "worker: decode it": lambda: decode_activation(payload).array(),
        "worker: encode the reply": lambda: encode_reply(
            Reply(frame_id=1, worker_id="w", label=3, confidence=0.9, cloud_ms=4.0)
        ),
        "node: decode the reply": lambda: decode_reply(reply),
        "node: encode the result": lambda: encode_result(result),
    }
    ms = median_ms(fns, repeats=7, inner=200, settle=0.0)
    return {k: v * 1e3 for k, v in ms.items()}


# -- bandit: cProfile of a policy's loop ------------------------------------------------------


def bandit_profile(spec: str, samples: int = 5000, top: int = 8) -> str:
    """cProfile's top functions (by own time) of ``spec``'s decide + observe loop."""
    from bench_bandit import BLOCKS, _stream, _time_policy
    from shared.cost import RewardModel, paper_cost

    rm = RewardModel(paper_cost(BLOCKS))
    conf, cls = _stream(samples)
    _time_policy(spec, conf[:200], cls[:200], rm)  # first-use costs (imports, caches) out
    prof = cProfile.Profile()
    prof.runcall(_time_policy, spec, conf, cls, rm)
    stats = pstats.Stats(prof).stats  # (file, line, name) -> (prim calls, calls, own s, cum s, _)
    top_fns = sorted(stats.items(), key=lambda kv: -kv[1][2])[:top]
    total = sum(v[2] for v in stats.values())
    rows = []
    for (file, line, name), (_, calls, own, _, _) in top_fns:
        where = Path(file).resolve().relative_to(ROOT) if file.startswith(str(ROOT)) else file
        rows.append(
            [
                f"{where}:{line}({name})",
                str(calls),
                f"{own / samples * 1e6:.2f}",
                f"{100 * own / total:.0f}",
            ]
        )
    return f"cProfile of `{spec}`, {samples} decide + observe:\n\n" + format_table(
        ["function", "calls", "own us per decision", "% of own time"], rows
    )


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--model", type=Path, default=ROOT / "models" / "digits.pt")
    p.add_argument("--quick", action="store_true", help="32 px, 10 runs, one split")
    p.add_argument("--size", type=int, default=224)
    p.add_argument("--block", type=int, default=3)
    args = p.parse_args(argv)
    ckpt = load_checkpoint(args.model)
    size = ckpt.meta.input_size if args.quick else args.size
    print(edge_profile(ckpt, size, args.block, iters=10 if args.quick else 50))
    print()
    print(bytes_breakdown(ckpt, [3] if args.quick else None)[0])
    print()
    print(bandit_profile("isplitee", samples=500 if args.quick else 5000))
    print()
    print(json.dumps(message_costs_us(ckpt), indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
