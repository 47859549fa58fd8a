"""What a node and a worker cost a device: memory, start-up, disk, and whether a Pi can install it.

    python bench/bench_footprint.py --model models/digits.pt --out docs/benchmarks.md   # ~6 min
    python bench/bench_footprint.py --model models/digits.pt --quick                    # ~1 min
    python bench/bench_footprint.py --pi-wheels --out docs/benchmarks.md  # the aarch64 check alone

Side by side in one run, at the checkpoint's own input size and at 224 px (the same weights on
bigger inputs: memory and time do not depend on what the weights learnt), each pipeline is a
real ``isplitee-device`` and a real ``isplitee-cloud`` process on a private Mosquitto:

* **torch**: both given the ``.pt`` checkpoint (ONNX Runtime halves exported from it at start,
  torch imported to read it), as every release before the artefact;
* **artefact**: both given the exported ``.isplitee`` file, started with torch made unimportable
  (as on a Pi with the [device] extra only).

Per pipeline: the node's and the worker's resident memory, steady (median over the run after
the first result) and peak (the kernel's high-water mark), and the time from starting the node
to its first result, on a warm disk (one unmeasured start before). The node runs the default
policy with the paper's costs, so it offloads and the worker has work.

Disk: a fresh virtualenv with only ``[device]``, and one with only ``[cloud]``, installed from
this checkout, measured with ``du``; beside it what torch and its CUDA libraries take in the
project's own virtualenv (what ``[device]`` pulled in before). The Pi check asks pip to resolve
every ``[device]`` dependency to a wheel for aarch64, CPython 3.11, glibc 2.36 (Raspberry Pi OS
Bookworm, 64-bit) without building anything, and lists what it picked. Both need the package
index; without it they say so. The per-frame work without torch: preprocessing a 640x480 frame
on numpy against torch, and the codec at 224 px block 3, timed in one process.
"""

from __future__ import annotations

import argparse
import os
import platform
import queue
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import tomllib
from dataclasses import dataclass
from pathlib import Path

from common import bench_message, median_ms
from shared.lab.broker import DEV_CONFIG, broker_from
from shared.lab.clips import write_digit_clip
from shared.lab.pages import replace_section, section
from shared.lab.procs import device_command, worker_command
from shared.lab.report import format_table
from shared.mqtt import MqttLink

ROOT = Path(__file__).resolve().parent.parent

NODE_RSS_TARGET_MB = 150
NODE_RSS_AIM_MB = 100
WORKER_RSS_TARGET_MB = 300
FIRST_RESULT_TARGET_S = 2.0
DEVICE_DISK_TARGET_MB = 200
CODEC_TARGET_MS = 1.0

PI_PYTHON = "3.11"
PI_PLATFORMS = [f"manylinux_2_{v}_aarch64" for v in range(36, 16, -1)] + ["manylinux2014_aarch64"]
"""Wheel tags a Raspberry Pi OS Bookworm (glibc 2.36, aarch64) pip accepts, newest first."""
BOOKWORM_NUMPY = "1.24.2"
"""Debian Bookworm's python3-numpy, which python3-picamera2 is built against: deploy/pi/install.sh
pins the venv's numpy to the system's, so the wheel check resolves with the same pin."""

NO_TORCH = (
    "import runpy, sys\n"
    "for name in ('torch', 'torchvision', 'onnx'):\n"
    "    sys.modules[name] = None\n"
    "sys.argv = [{module!r}, *{args!r}]\n"
    "runpy.run_module({module!r}, run_name='__main__', alter_sys=True)\n"
)


def _no_torch(cmd: list[str]) -> list[str]:
    """``python -m MODULE ARGS`` with torch unimportable."""
    assert cmd[1] == "-m"
    return [cmd[0], "-c", NO_TORCH.format(module=cmd[2], args=cmd[3:])]


def _mb(pid: int, key: str) -> float | None:
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    m = re.search(rf"^{key}:\s+(\d+) kB", text, re.M)
    return int(m.group(1)) / 1024 if m else None


class Sampler(threading.Thread):
    """Resident memory of one process every 50 ms, and its high-water mark, while it lives."""

    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self.pid = pid
        self.samples: list[tuple[float, float]] = []
        self.peak = 0.0
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.is_set():
            rss, hwm = _mb(self.pid, "VmRSS"), _mb(self.pid, "VmHWM")
            if rss is None:
                return
            self.samples.append((time.monotonic(), rss))
            self.peak = max(self.peak, hwm or 0.0)
            time.sleep(0.05)

    def steady(self, after: float) -> float:
        late = [r for t, r in self.samples if t >= after]
        return statistics.median(late) if late else float("nan")


@dataclass
class Run:
    kind: str
    size: int
    node_steady: float
    node_peak: float
    worker_steady: float
    worker_peak: float
    first_result_s: float
    results: int
    frames: int


def _start(cmd: list[str], env: dict[str, str]) -> subprocess.Popen:
    return subprocess.Popen(
        cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env
    )


def _pipeline(kind: str, size: int, model: Path, clip: Path, frames: int, fps: float) -> Run:
    """One worker and one node on a private broker; the node's first result is timed from its
    start, memory sampled throughout."""
    wrap = _no_torch if kind == "artefact" else (lambda c: c)
    with tempfile.TemporaryDirectory() as tmp:
        broker = broker_from(DEV_CONFIG, Path(tmp)).start()
        env = {**os.environ, "XDG_CACHE_HOME": str(Path(tmp) / "cache")}
        try:
            worker = _start(wrap(worker_command(broker.url, model, "w1")), env)
            w_mem = Sampler(worker.pid)
            w_mem.start()
            reader = MqttLink(broker.url, "footprint-reader", subscriptions=["isplitee/+/result"])
            reader.start(10)
            time.sleep(1.0)  # the worker subscribes before the node's first offload
            args = ["--cost", "paper", "--fps", str(fps), "--max-frames", str(frames)]
            for attempt in ("warm-up", "measured"):
                started = time.monotonic()
                node = _start(
                    wrap(device_command(broker.url, model, clip, f"cam-{attempt}", *args)), env
                )
                n_mem = Sampler(node.pid)
                n_mem.start()
                first, results = None, 0
                while node.poll() is None or not reader.inbox.empty():
                    try:
                        msg = reader.inbox.get(timeout=0.05)
                    except queue.Empty:
                        continue
                    if msg.topic == f"isplitee/cam-{attempt}/result":
                        results += 1
                        first = first or time.monotonic()
                _out, err = node.communicate(timeout=120)
                n_mem.done.set()
                if node.returncode != 0:
                    raise SystemExit(f"{kind} node at {size} px failed:\n{err[-2000:]}")
            w_mem.done.set()
            reader.stop()
            worker.terminate()
            _out, err = worker.communicate(timeout=30)
        finally:
            broker.stop()
    if first is None:
        raise SystemExit(f"{kind} node at {size} px published no result")
    return Run(
        kind,
        size,
        n_mem.steady(first),
        n_mem.peak,
        w_mem.steady(first),
        w_mem.peak,
        first - started,
        results,
        frames,
    )


def _models(model: Path, tmp: Path, quick: bool) -> dict[int, tuple[Path, Path]]:
    """(checkpoint, artefact) at the model's size and at 224 px (the same weights)."""
    from shared.checkpoint import load_checkpoint, save_checkpoint
    from shared.lab.export import export_artefact, held_out

    ckpt = load_checkpoint(model)
    out: dict[int, tuple[Path, Path]] = {}
    for size in dict.fromkeys((ckpt.meta.input_size, 224)):
        if size == ckpt.meta.input_size:
            pt = model
        else:
            pt = tmp / f"{model.stem}-{size}px.pt"
            save_checkpoint(pt, ckpt.model, ckpt.meta.model_copy(update={"input_size": size}))
        art = tmp / f"{pt.stem}.isplitee"
        big = load_checkpoint(pt)
        export_artefact(big, art, images=held_out(big, 10 if quick else 50))
        out[size] = (pt, art)
    return out


def _du_mb(path: Path) -> float:
    out = subprocess.run(["du", "-sk", str(path)], capture_output=True, text=True, check=True)
    return int(out.stdout.split()[0]) / 1024


def _fresh_venv(extra: str, where: Path) -> tuple[float | None, str]:
    """MB of a new virtualenv with only ``.[extra]`` installed, and its largest packages."""
    venv = where / f"venv-{extra}"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    pip = subprocess.run(
        [str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet", f"{ROOT}[{extra}]"],
        capture_output=True,
        text=True,
    )
    if pip.returncode != 0:
        return None, f"pip could not install [{extra}] here: {pip.stderr.strip()[-300:]}"
    site = next((venv / "lib").glob("python*/site-packages"))
    sizes = sorted(
        ((_du_mb(p), p.name) for p in site.iterdir() if p.is_dir() and "dist-info" not in p.name),
        reverse=True,
    )
    top = ", ".join(f"{name} {mb:.0f} MB" for mb, name in sizes[:5])
    torch_there = (site / "torch").exists()
    return _du_mb(venv), top + ("; **torch installed**" if torch_there else "; no torch")


def _torch_in_dev_venv() -> str:
    import torch

    site = Path(torch.__file__).parent.parent
    parts = {n: site / n for n in ("torch", "nvidia", "triton") if (site / n).exists()}
    sizes = {n: _du_mb(p) for n, p in parts.items()}
    return (
        "for comparison, in this project's own virtualenv (training extras): "
        + ", ".join(f"{n} {mb:,.0f} MB" for n, mb in sizes.items())
        + f", {sum(sizes.values()):,.0f} MB in all: what `[device]` installed before."
    )


def device_requirements() -> list[str]:
    """The core dependencies and the [device] extra, as pyproject.toml states them."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    return [*project["dependencies"], *project["optional-dependencies"]["device"]]


def _pi_flags() -> list[str]:
    flags = ["--only-binary=:all:", "--python-version", PI_PYTHON, "--implementation", "cp"]
    flags += ["--abi", "cp311", *(a for p in PI_PLATFORMS for a in ("--platform", p))]
    return flags


def pi_install_mb(where: Path) -> tuple[float | None, str]:
    """MB that ``[device]`` and this package take installed for a Pi (aarch64 wheels unpacked
    into a target directory: what a Pi's virtualenv holds besides pip itself)."""
    target = where / "pi-site-packages"
    pin = where / "constraints.txt"
    pin.write_text(f"numpy=={BOOKWORM_NUMPY}\n")
    pip = [sys.executable, "-m", "pip", "install", "--quiet", "--target", str(target)]
    deps = subprocess.run(
        [*pip, *_pi_flags(), "-c", str(pin), *device_requirements()],
        capture_output=True,
        text=True,
    )
    if deps.returncode != 0:
        return None, f"pip could not install the aarch64 wheels here: {deps.stderr.strip()[-300:]}"
    subprocess.run([*pip, "--no-deps", str(ROOT)], capture_output=True, text=True, check=True)
    # numpy stays the system's on a Pi (the installer's pin): not in the venv.
    for numpy_dir in target.glob("numpy*"):
        shutil.rmtree(numpy_dir)
    sizes = sorted(
        ((_du_mb(p), p.name) for p in target.iterdir() if p.is_dir() and "dist-info" not in p.name),
        reverse=True,
    )
    return _du_mb(target), ", ".join(f"{name} {mb:.0f} MB" for mb, name in sizes[:5])


def pi_wheels() -> tuple[list[list[str]], str]:
    """Rows (package, version, wheel, MB) pip resolves for a Pi beside python3-picamera2
    (numpy pinned to Bookworm's, as the installer does), and a verdict line."""
    with tempfile.TemporaryDirectory() as tmp:
        pin = Path(tmp) / "constraints.txt"
        pin.write_text(f"numpy=={BOOKWORM_NUMPY}\n")
        cmd = [sys.executable, "-m", "pip", "download", "--quiet", *_pi_flags(), "-c", str(pin)]
        cmd += ["-d", tmp, *device_requirements()]
        out = subprocess.run(cmd, capture_output=True, text=True)
        if out.returncode != 0:
            return [], (
                "**Not checked**: pip could not resolve every `[device]` dependency to an "
                f"aarch64 wheel here: {out.stderr.strip().splitlines()[-1] if out.stderr else ''}"
            )
        rows = []
        for wheel in sorted(Path(tmp).glob("*.whl")):
            name, version = wheel.name.split("-")[:2]
            rows.append([name, version, wheel.name, f"{wheel.stat().st_size / 2**20:.1f}"])
    total = sum(float(r[3]) for r in rows)
    names = {r[0].lower().replace("_", "-") for r in rows}
    torch_free = not names & {"torch", "torchvision", "triton"}
    return rows, (
        f"Every `[device]` dependency resolves to a wheel for aarch64, CPython {PI_PYTHON} "
        f"(Raspberry Pi OS Bookworm) with numpy held at the system's {BOOKWORM_NUMPY}: "
        f"{len(rows)} wheels, {total:.1f} MB to download (numpy's included, though a Pi keeps "
        "its own), " + ("no torch, no CUDA." if torch_free else "**torch is among them**.")
    )


def pi_wheels_text(wheels: list[list[str]], verdict: str) -> str:
    """The wheel check's part of the page (section ``pi-wheels``): ``make pi-wheels``
    rewrites it alone, ``make bench-footprint`` with the rest of the footprint section."""
    table = format_table(["package", "version", "wheel", "MB"], wheels) + "\n\n" if wheels else ""
    return "\n".join(
        [
            "### A Raspberry Pi can install it",
            "",
            "`make pi-wheels` (`python bench/bench_footprint.py --pi-wheels --out "
            "docs/benchmarks.md`): pip resolves the `[device]` dependencies for aarch64, "
            "CPython 3.11, glibc 2.36 with `--only-binary=:all:` (nothing may need building on "
            f"the Pi) and `numpy=={BOOKWORM_NUMPY}`, as `deploy/pi/install.sh` does beside "
            "Bookworm's `python3-picamera2`: that package, simplejpeg and python3-av are built "
            "against the system's numpy 1.24, and a numpy 2 from pip breaks them (\"numpy.dtype "
            'size changed", picamera2 issues #1088, #1211). The pin is what picks the OpenCV '
            "below: the newest OpenCV wheels need numpy 2.",
            "",
            table + verdict,
        ]
    )


def per_frame(artefact: Path, repeats: int) -> tuple[list[list[str]], str]:
    """Preprocess (numpy against torch) and codec (no torch) times at 224 px, one process."""
    import numpy as np
    import torch

    from shared.artefact import load_artefact
    from shared.preprocess import FramePreprocessor
    from shared.protocol import ENCODINGS, decode_activation
    from shared.transforms import normalize, resize
    from shared.wire import wire_encodings

    art = load_artefact(artefact)
    meta = art.meta
    frame = np.random.default_rng(0).integers(0, 256, (480, 640, 3), dtype=np.uint8)
    prep = FramePreprocessor(meta.input_size, meta.mean, meta.std)
    torch.set_num_threads(1)

    def torch_prep():
        x = torch.from_numpy(frame).permute(2, 0, 1)[None].float() / 255.0
        return normalize(resize(x, meta.input_size).clamp_(0, 1), meta.mean, meta.std)

    ms = median_ms({"numpy": lambda: prep(frame), "torch": torch_prep}, repeats, inner=10)
    rows = [["preprocess 640x480 -> 224 (numpy, the node)", f"{ms['numpy']:.2f}"]]
    rows.append(["preprocess 640x480 -> 224 (torch, before)", f"{ms['torch']:.2f}"])
    block = meta.exit_blocks[0]
    act = art.open_chain(1).edge(prep(frame), block)[0][0]

    def round_trip(enc: str):
        return lambda: decode_activation(bench_message(art, act, block, enc)).array()

    codec = median_ms({e: round_trip(e) for e in ENCODINGS}, repeats, inner=20)
    for e in ENCODINGS:
        rows.append(
            [f"codec {e}, block {block} ({act.size:,} values), encode + decode", f"{codec[e]:.3f}"]
        )
    sends = wire_encodings("auto", meta.exit_blocks, meta.wire_encodings)[block]
    worst = max(codec.values())
    verdict = (
        f"Codec target: encode + decode at most {CODEC_TARGET_MS:g} ms at 224 px block {block} "
        f"without torch (`auto` sends {sends} there): slowest encoding {worst:.3f} ms, "
        f"**{'met' if worst <= CODEC_TARGET_MS else 'missed'}**. Preprocessing on numpy takes "
        f"{ms['numpy'] / ms['torch']:.1f}x torch's time on this frame (an exact copy of "
        "torch's antialiased filter, gathered row by row; torch's is vectorised C++)."
    )
    return rows, verdict


def _judge(value: float, target: float) -> str:
    return f"{value:.0f} ({'met' if value <= target else '**missed**'})"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--model", type=Path, default=ROOT / "models" / "digits.pt")
    p.add_argument("--out", type=Path, help="replace the footprint section of this page")
    p.add_argument("--quick", action="store_true", help="short runs, no fresh virtualenvs")
    p.add_argument("--pi-wheels", action="store_true", help="only the aarch64 wheel check")
    args = p.parse_args(argv)
    if args.pi_wheels:
        rows, verdict = pi_wheels()
        if rows:
            print(format_table(["package", "version", "wheel", "MB"], rows))
        print(verdict)
        if args.out is not None and rows:
            replace_section(args.out, "pi-wheels", pi_wheels_text(rows, verdict))
            print(f"wrote the pi-wheels section of {args.out}")
        return 0 if rows else 1
    frames, fps = (40, 20.0) if args.quick else (200, 20.0)
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        clip = write_digit_clip(tmp / "clip.avi", frames).path
        models = _models(args.model, tmp, args.quick)
        runs = []
        for size, (pt, art) in models.items():
            for kind, model in (("torch", pt), ("artefact", art)):
                run = _pipeline(kind, size, model, clip, frames, fps)
                print(run, flush=True)
                runs.append(run)
        work_rows, work_verdict = per_frame(models[224][1], 3 if args.quick else 9)
        venvs = []
        pi_mb: tuple[float | None, str] = (None, "(not run with --quick)")
        if not args.quick:
            for extra in ("device", "cloud"):
                venvs.append((extra, *_fresh_venv(extra, tmp)))
            pi_mb = pi_install_mb(tmp)
    page = _page(args, runs, work_rows, work_verdict, venvs, pi_mb)
    print(page)
    if args.out:
        replace_section(args.out, "footprint", page, before="## Profiles of the missed targets")
        print(f"wrote the footprint section of {args.out}")
    return 0


RUN_HEADERS = [
    "model file",
    "input px",
    "node MB",
    "node peak MB",
    "worker MB",
    "worker peak MB",
    "first result s",
    "results",
]


def _run_rows(runs: list[Run]) -> list[list[str]]:
    """One table row per run: memory, first result and results of its node and worker."""
    return [
        [
            r.kind,
            str(r.size),
            f"{r.node_steady:.0f}",
            f"{r.node_peak:.0f}",
            f"{r.worker_steady:.0f}",
            f"{r.worker_peak:.0f}",
            f"{r.first_result_s:.2f}",
            f"{r.results}/{r.frames}",
        ]
        for r in runs
    ]


def _side_by_side(runs: list[Run]) -> list[str]:
    """Per input size, the artefact's memory and first result as multiples of torch's."""
    by = {(r.kind, r.size): r for r in runs}
    ratios = []
    for size in sorted({r.size for r in runs}):
        t, a = by[("torch", size)], by[("artefact", size)]
        ratios.append(
            f"at {size} px the artefact node holds {a.node_steady / t.node_steady:.2f}x the torch "
            f"node's memory and the worker {a.worker_steady / t.worker_steady:.2f}x; first "
            f"result {a.first_result_s / t.first_result_s:.2f}x the time"
        )
    return ratios


def _run_targets(runs: list[Run]) -> list[str]:
    """The memory and first-result targets, judged on the artefact runs."""
    big = {(r.kind, r.size): r for r in runs}[("artefact", 224)]
    return [
        f"node steady RSS at 224 px ≤ {NODE_RSS_TARGET_MB} MB (aim ≤ {NODE_RSS_AIM_MB}): "
        + _judge(big.node_steady, NODE_RSS_TARGET_MB)
        + (" MB, aim met" if big.node_steady <= NODE_RSS_AIM_MB else " MB, aim missed"),
        f"worker steady RSS ≤ {WORKER_RSS_TARGET_MB} MB: "
        + _judge(max(r.worker_steady for r in runs if r.kind == "artefact"), WORKER_RSS_TARGET_MB)
        + " MB (the larger of the two sizes)",
        f"first result ≤ {FIRST_RESULT_TARGET_S:g} s after start on a warm disk: "
        + ", ".join(
            f"{r.first_result_s:.2f} s at {r.size} px "
            f"({'met' if r.first_result_s <= FIRST_RESULT_TARGET_S else '**missed**'})"
            for r in runs
            if r.kind == "artefact"
        ),
    ]


def _venv_disk(venvs) -> tuple[list[str], list[str]]:
    """The fresh virtualenvs' sizes as list items, and the ``[device]`` one's target."""
    disk, targets = [], []
    for extra, mb, top in venvs:
        if mb is None:
            disk.append(f"- `[{extra}]`: {top}")
            continue
        judged = (
            f" (target ≤ {DEVICE_DISK_TARGET_MB} MB: "
            f"{'met' if mb <= DEVICE_DISK_TARGET_MB else '**missed**'})"
            if extra == "device"
            else ""
        )
        disk.append(
            f"- a fresh virtualenv with only `[{extra}]`: **{mb:.0f} MB**{judged}; largest: {top}"
        )
        if extra == "device":
            targets.append(
                f"`[device]` virtualenv on this x86_64 machine ≤ {DEVICE_DISK_TARGET_MB} MB: "
                f"{mb:.0f} MB ({'met' if mb <= DEVICE_DISK_TARGET_MB else '**missed**'})"
            )
    return disk, targets


def _disk(venvs, pi_mb, quick: bool) -> tuple[list[str], list[str]]:
    """The disk section's list items (virtualenvs, then a Pi's install), and its targets."""
    disk, targets = _venv_disk(venvs)
    if pi_mb[0] is not None:
        mb = pi_mb[0]
        verdict = "met" if mb <= DEVICE_DISK_TARGET_MB else "**missed**"
        disk.append(
            f"- the same `[device]` packages as a Pi installs them (the aarch64 wheels for "
            f"CPython {PI_PYTHON} unpacked with `pip install --target`, numpy held at Bookworm's "
            f"{BOOKWORM_NUMPY} and left out (the Pi's own), this package included, "
            f"pip itself not): **{mb:.0f} MB** (target ≤ {DEVICE_DISK_TARGET_MB} MB: {verdict}); "
            f"largest: {pi_mb[1]}"
        )
        targets.append(
            f"`[device]` as installed on a Pi ≤ {DEVICE_DISK_TARGET_MB} MB: {mb:.0f} MB ({verdict})"
        )
    elif not quick:
        disk.append(f"- on a Pi: {pi_mb[1]}")
    if venvs:
        disk.append(f"- {_torch_in_dev_venv()}")
    return disk, targets


def _page(args, runs: list[Run], work_rows, work_verdict: str, venvs, pi_mb) -> str:
    """The footprint section: memory and start-up per run, the targets, disk and per frame."""
    disk, disk_targets = _disk(venvs, pi_mb, args.quick)
    targets = _run_targets(runs) + disk_targets
    wheels, wheel_verdict = pi_wheels() if not args.quick else ([], "(not run with --quick)")
    lines = [
        "## Footprint: the node and the worker without torch",
        "",
        "`make bench-footprint` (`python bench/bench_footprint.py --model models/digits.pt "
        f"--out docs/benchmarks.md`), on {platform.machine()}, Python "
        f"{platform.python_version()}"
        + (". **--quick run: figures not for reading.**" if args.quick else ".")
        + " Each row is a real node and a real worker process (one thread each) on a private "
        "Mosquitto, the node replaying held-out digits at 20 fps with the default policy and "
        "the paper's costs; *torch*: both given the `.pt`, *artefact*: both given the "
        "`.isplitee` with torch made unimportable. 224 px: the same weights on bigger inputs. "
        "Memory in MB (steady: median after the first result; peak: the kernel's high-water "
        "mark); first result: seconds from starting the node, after one unmeasured start.",
        "",
        format_table(RUN_HEADERS, _run_rows(runs)),
        "",
        "Side by side: " + "; ".join(_side_by_side(runs)) + ".",
        "",
        "Targets: " + "; ".join(targets) + ".",
        "",
        "### Disk",
        "",
        *(disk or ["(fresh virtualenvs not built with --quick)"]),
        "",
        section("pi-wheels", pi_wheels_text(wheels, wheel_verdict)),
        "",
        "### Per frame without torch (224 px, one thread)",
        "",
        format_table(["what", "ms"], work_rows),
        "",
        work_verdict,
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
