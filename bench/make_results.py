"""Regenerate ``docs/results.md``: I-SplitEE and its baselines on the bundled digits models.

Run: ``make results`` (trains the two digits checkpoints first if they are missing). Every figure
in the page is computed here from the checkpoints; nothing is typed in by hand. Targets are
checked in code and a missed one is printed as MISSED with its figure.
"""

from __future__ import annotations

import argparse
import itertools
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from shared import cost as costs
from shared.bandit import DiscountedUCB, build_policy
from shared.checkpoint import Checkpoint, load_checkpoint
from shared.cost import RewardModel
from shared.lab.confidence import build_stream, build_table
from shared.lab.distortions import Distortion
from shared.lab.report import format_table, settle_table, simulation_table
from shared.lab.simulate import (
    SimulationResult,
    Stream,
    default_policy_names,
    make_policy_factory,
    run_policy,
    simulate,
)
from shared.lab.simulate_cli import cost_model, parse_schedule
from shared.profile import profile_model

DISTORTIONS = (
    "clean",
    "gaussian_noise:1",
    "gaussian_noise:2",
    "gaussian_noise:3",
    "gaussian_blur:0.5",
    "gaussian_blur:1",
)
SAMPLES = 2000
RUNS = 5


@dataclass(frozen=True)
class Setting:
    label: str
    model: str  # "paper" or "robust"
    alpha: float
    calibration: str  # "none" or "temperature"
    c: float = 1.0

    def flags(self) -> str:
        return f"--alpha {self.alpha:g} --calibration {self.calibration} --c {self.c:g}"


SETTINGS = (
    Setting("paper: clean training, raw confidence, alpha 0.5, c 1", "paper", 0.5, "none"),
    Setting("paper model + temperature scaling (clean val)", "paper", 0.5, "temperature"),
    Setting("distortion-augmented training, alpha 0.5", "robust", 0.5, "none"),
    Setting("augmented + temperature (distorted val), alpha 0.8", "robust", 0.8, "temperature"),
    Setting("augmented, raw confidence, alpha 0.8, c 1", "robust", 0.8, "none"),
    Setting(
        "augmented, raw confidence, alpha 0.8, c 0.25 (recommended)", "robust", 0.8, "none", 0.25
    ),
)
RECOMMENDED = SETTINGS[-1]
PAPER_C = SETTINGS[-2]


def _streams(ckpt: Checkpoint, spec: str, calibration: str) -> list[Stream]:
    """RUNS independent draws (seeds 0..RUNS-1, as ``isplitee simulate --runs``) of ``spec``:
    one distortion (SAMPLES long) or a ``schedule:...`` as on the command line."""
    parts = parse_schedule(spec, SAMPLES)
    calibrated = calibration == "temperature"
    return [build_stream(ckpt, parts, calibrated=calibrated, seed=r) for r in range(RUNS)]


def _rewards(ckpt: Checkpoint, cost: str, alpha: float) -> RewardModel:
    return RewardModel(cost_model(ckpt, cost), alpha=alpha)


def _run(
    ckpt: Checkpoint,
    streams: list[Stream],
    *,
    cost: str,
    alpha: float,
    policies: list[str] | None = None,
    c: float = 1.0,
    extra_c: dict[str, float] | None = None,
) -> SimulationResult:
    """Every policy on every stream; ``extra_c`` adds I-SplitEE rows at other c (label: c)."""
    rewards = _rewards(ckpt, cost, alpha)
    names = policies or default_policy_names(ckpt.meta.arm_blocks)
    factories = {n: make_policy_factory(n, rewards, c=c) for n in names}
    for label, other in (extra_c or {}).items():
        factories[label] = lambda r, other=other: build_policy("isplitee", rewards, c=other)
    return simulate(streams, rewards, factories)


def _verdict(ok: bool, figure: str) -> str:
    return f"met ({figure})" if ok else f"MISSED ({figure})"


def _cmd(model: Path, distortion: str, extra: str) -> str:
    return (
        f"isplitee simulate --model {model} --distortion {distortion} --samples {SAMPLES} "
        f"--runs {RUNS} {extra}"
    ).strip()


def test_size(ckpt: Checkpoint) -> int:
    """Images in the checkpoint's held-out test split (what every stream draws from)."""
    return build_table(ckpt, Distortion.parse("clean"), samples=None, seed=7).test_size


def exit_table(ckpt: Checkpoint) -> str:
    """Per-exit accuracy on the held-out test split, clean and under two distortions."""
    prof = profile_model(ckpt.model, ckpt.meta.input_size)
    tables = {
        spec: build_table(ckpt, Distortion.parse(spec), samples=None, seed=7)
        for spec in ("clean", "gaussian_noise:2", "gaussian_blur:1")
    }
    accs = {spec: t.correct().mean(axis=0) for spec, t in tables.items()}
    clean_conf = tables["clean"].confidences(None).mean(axis=0)
    rows = []
    for i, b in enumerate(ckpt.meta.arm_blocks):
        rows.append(
            [
                "final" if i == len(ckpt.meta.arm_blocks) - 1 else str(b),
                f"{prof.macs_to_exit(b) / 1e6:.2f}",
                *(f"{100 * accs[s][i]:.1f}" for s in accs),
                f"{clean_conf[i]:.3f}",
                f"{ckpt.meta.arm_temperatures()[i]:.2f}",
            ]
        )
    return format_table(
        [
            "exit",
            "MFLOPs",
            "acc % clean",
            "acc % noise 2",
            "acc % blur 1",
            "mean conf clean",
            "temperature",
        ],
        rows,
    )


def summary_rows(
    ckpts: dict[str, Checkpoint], setting: Setting, cost: str
) -> tuple[list[list[str]], list[tuple[float, float, float]]]:
    ckpt = ckpts[setting.model]
    rows, figures = [], []
    for spec in DISTORTIONS:
        res = _run(
            ckpt,
            _streams(ckpt, spec, setting.calibration),
            cost=cost,
            alpha=setting.alpha,
            policies=["isplitee", "final", "oracle"],
            c=setting.c,
        )
        s, f = res.policies["isplitee"], res.policies["final"]
        loss = f.accuracy - s.accuracy
        figures.append((s.cost_reduction, loss, s.reward_gap))
        rows.append(
            [
                spec,
                f"{100 * f.accuracy:.1f}",
                f"{100 * s.accuracy:.1f} ± {100 * s.accuracy_std:.1f}",
                f"{100 * loss:+.1f}",
                f"{100 * s.cost_reduction:.1f}",
                f"{100 * s.offload_rate:.1f}",
                str(ckpt.meta.arm_blocks[res.oracle_arm]),
                f"{100 * s.reward_gap:.1f}",
            ]
        )
    return rows, figures


SUMMARY_HEADERS = [
    "distortion",
    "final-layer acc %",
    "I-SplitEE acc %",
    "acc loss (points)",
    "cost reduction %",
    "offload %",
    "oracle split",
    "reward gap to oracle %",
]


def time_cli(model: Path) -> tuple[float, float]:
    """Wall time of ``isplitee simulate`` with an empty cache, then again with it filled."""
    exe = Path(sys.executable).with_name("isplitee")
    cache = Path(tempfile.mkdtemp(prefix="isplitee-results-"))
    cmd = [str(exe), "simulate", "--model", str(model), "--distortion", "gaussian_noise:2"]
    cmd += ["--samples", str(SAMPLES), "--runs", "3", "--cache-dir", str(cache), "--no-progress"]
    times = []
    try:
        for _ in range(2):
            t0 = time.perf_counter()
            subprocess.run(cmd, check=True, capture_output=True)
            times.append(time.perf_counter() - t0)
    finally:
        shutil.rmtree(cache, ignore_errors=True)
    return times[0], times[1]


LONG_SAMPLES = 20_000
LONG_RUNS = 2
LONG_CHECKPOINTS = (2_000, 5_000, 10_000, 20_000)


def long_stream_rows(ckpt: Checkpoint) -> list[list[str]]:
    """Reward gap of I-SplitEE under the measured cost on long streams, at several lengths."""
    rewards = _rewards(ckpt, "measured", RECOMMENDED.alpha)
    rows = []
    for spec in ("clean", "gaussian_blur:1"):
        gaps = np.zeros(len(LONG_CHECKPOINTS))
        for r in range(LONG_RUNS):
            parts = parse_schedule(spec, LONG_SAMPLES)
            stream = build_stream(ckpt, parts, calibrated=False, seed=100 + r)
            full = rewards.reward_matrix(stream.confidences)
            got = run_policy(build_policy("isplitee", rewards, c=RECOMMENDED.c), stream).rewards
            for i, n in enumerate(LONG_CHECKPOINTS):
                best = full[:n].mean(axis=0).max()
                gaps[i] += (best - got[:n].mean()) / abs(best) / LONG_RUNS
        rows.append([spec, *(f"{100 * g:.1f}" for g in gaps)])
    return rows


def _slopes(curve) -> tuple[float, float]:
    """Regret added per sample over the second quarter (after the warm-up) and the last."""
    n = len(curve)
    q1, q2, q3 = curve[n // 4 - 1], curve[n // 2 - 1], curve[3 * n // 4 - 1]
    return (q2 - q1) / (n // 4), (curve[-1] - q3) / (n - 3 * n // 4)


SETTLED_SLOPE = 1e-3
"""Regret per sample below which a policy counts as settled (a tenth of a percent of the
paper's reward range per sample)."""


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=Path("models/digits.pt"))
    parser.add_argument("--paper-model", type=Path, default=Path("models/digits-paper.pt"))
    parser.add_argument("--out", type=Path, default=Path("docs/results.md"))
    parser.add_argument("--img", type=Path, default=Path("docs/img"))
    args = parser.parse_args()
    ckpts = {"robust": load_checkpoint(args.model), "paper": load_checkpoint(args.paper_model)}
    model_path = {"robust": args.model, "paper": args.paper_model}
    out: list[str] = []
    w = out.append

    n_test = test_size(ckpts["robust"])
    w("# Results: I-SplitEE on the bundled digits models\n")
    w(
        "Generated by `make results` (`python bench/make_results.py`); every figure below comes "
        "from that run. Data: scikit-learn's handwritten digits (real 8x8 scans, upscaled to "
        f"32x32), held-out test split only ({n_test} images). Each of the {RUNS} runs is an "
        f"independent stream of {SAMPLES} draws with replacement from those images, each draw "
        "with a fresh distortion (seeds 0.., as `isplitee simulate --runs`); ± is the standard "
        f"deviation over the {RUNS} runs, so it covers which images were drawn and the noise "
        "added to them as well as the policy's own luck (a fixed split shows the first two "
        "only). Cost reduction is against running every sample through the final layer on the "
        "device (the paper's reference). Distortion levels are defined in "
        "`shared/lab/distortions.py` (noise level L: std L/10 of full scale; blur level S: "
        "Gaussian sigma S pixels).\n"
    )
    w("## Models\n")
    for key, label in (("paper", "paper recipe (clean images only)"), ("robust", "augmented")):
        ck = ckpts[key]
        notes = ", ".join(f"{k} {v}" for k, v in sorted(ck.meta.notes.items()))
        w(f"**{label}**: `{model_path[key]}`, hash `{ck.short_hash}`, {notes}.\n")
        w(exit_table(ck) + "\n")
    w(
        "Train them with `make model` (augmented: `isplitee train --dataset digits --augment 0.5 "
        "--calibrate-on distorted`) and `make paper-model` (`isplitee train --dataset digits`). "
        "MFLOPs: multiply-accumulates of the backbone up to the exit plus that exit's head.\n"
    )

    w("## Targets\n")
    rec_rows, rec_figs = summary_rows(ckpts, RECOMMENDED, "paper")
    worst_red = min(f[0] for f in rec_figs)
    worst_loss = max(f[1] for f in rec_figs)
    worst_gap = max(f[2] for f in rec_figs)
    _, paper_c_figs = summary_rows(ckpts, PAPER_C, "paper")
    paper_c_gap = max(f[2] for f in paper_c_figs)
    target_rows = [
        [
            "≥ 55 % cost reduction, ≤ 5 points accuracy loss, every distortion",
            _verdict(
                worst_red >= 0.55 and worst_loss <= 0.05,
                f"worst {100 * worst_red:.1f} %, worst loss {100 * worst_loss:.1f} points",
            ),
        ],
        [
            "aim: ≥ 60 % at ≤ 2 points",
            _verdict(
                worst_red >= 0.60 and worst_loss <= 0.02,
                f"worst {100 * worst_red:.1f} %, worst loss {100 * worst_loss:.1f} points",
            ),
        ],
        [
            f"mean reward within 5 % of the oracle fixed split after {SAMPLES} samples",
            _verdict(worst_gap <= 0.05, f"worst gap {100 * worst_gap:.1f} %"),
        ],
        [
            "the same with the paper's c = 1",
            _verdict(paper_c_gap <= 0.05, f"worst gap {100 * paper_c_gap:.1f} %"),
        ],
    ]
    target_slot = len(out)
    w("")  # filled in below once the schedule and timing are known

    w("## I-SplitEE against the final layer, per setting (paper cost model)\n")
    w(
        "One row per distortion: the final layer's accuracy (the reference), I-SplitEE's, the "
        "loss in points, cost reduction, share offloaded, the oracle's split and I-SplitEE's "
        "reward gap to it. The first setting is the paper's; the others are the remedies for "
        "over-confident early exits (the spec's fault 7).\n"
    )
    for setting in SETTINGS:
        rows, figs = (
            (rec_rows, rec_figs)
            if setting == RECOMMENDED
            else summary_rows(ckpts, setting, "paper")
        )
        red, loss = min(f[0] for f in figs), max(f[1] for f in figs)
        w(f"### {setting.label}\n")
        w(f"Model `{model_path[setting.model]}`, flags `{setting.flags()}`. ")
        w(f"Worst cost reduction {100 * red:.1f} %, worst accuracy loss {100 * loss:.1f} points.\n")
        w(format_table(SUMMARY_HEADERS, rows) + "\n")

    w("## Full tables, recommended setting\n")
    ck = ckpts["robust"]
    oracle_offloads: list[float] = []
    for cost in ("paper", "measured"):
        w(f"### Cost model: {cost}\n")
        gaps = []
        if cost == "measured":
            mc = cost_model(ck, "measured")
            prof = profile_model(ck.model, ck.meta.input_size)
            full_macs = prof.macs_to_split(ck.meta.arm_blocks[-1])
            full_ms = full_macs / (costs.DEFAULT_EDGE_GMACS * 1e9) * 1e3
            w(
                f"Measured model with its defaults: device {costs.DEFAULT_EDGE_GMACS:g} GMAC/s, "
                f"uplink {costs.DEFAULT_LINK_MBIT:g} Mbit/s, {costs.DEFAULT_RTT_MS:g} ms round "
                f"trip, {costs.DEFAULT_ENCODING} activations; costs in the paper's units (the "
                f"whole network on the device = {mc.full_cost:g}). A split pays the backbone up "
                "to it and every exit head on the way (the device computes them all). Per arm, "
                "edge: "
                + ", ".join(f"{x:.2f}" for x in mc.edge)
                + "; offload: "
                + ", ".join(f"{x:.2f}" for x in mc.offload[:-1])
                + f". At {ck.meta.input_size}x{ck.meta.input_size} the whole network with its "
                f"exits is {full_macs / 1e6:.1f} MMAC ({full_ms:.1f} ms on the device) while any "
                f"offload pays a {costs.DEFAULT_RTT_MS:g} ms round trip, so offloading is the "
                "expensive path here and the paper's 55 % target does not carry over; it is "
                "reported, not targeted.\n"
            )
        for spec in DISTORTIONS:
            res = _run(
                ck,
                _streams(ck, spec, RECOMMENDED.calibration),
                cost=cost,
                alpha=RECOMMENDED.alpha,
                c=RECOMMENDED.c,
            )
            gaps.append(res.policies["isplitee"].reward_gap)
            if cost == "measured":
                oracle_offloads.append(res.policies["oracle"].offload_rate)
            w(
                f"**{spec}** — `{_cmd(model_path['robust'], spec, RECOMMENDED.flags())}"
                f"{' --cost measured' if cost == 'measured' else ''}`\n"
            )
            w(simulation_table(res) + "\n")
            if cost == "paper" and spec == "gaussian_noise:2":
                from shared.lab.plots import write_plots

                written = write_plots(res, args.img / "noise2")
                curve = res.policies["isplitee"].regret_curve
                early, late = _slopes(curve)
                n = len(curve)
                w(
                    f"Regret of I-SplitEE (mean of {RUNS} runs) after {n // 4}, {n // 2}, "
                    f"{3 * n // 4} and {n} samples: "
                    + ", ".join(f"{curve[k - 1]:.1f}" for k in (n // 4, n // 2, 3 * n // 4, n))
                    + f". Added per sample over the second quarter (after the warm-up): "
                    f"{early:.4f}; over the last quarter: {late:.4f}. Sublinear growth: the "
                    "slope falls (to at most half), or is already below "
                    f"{SETTLED_SLOPE:g} per sample (settled).\n"
                )
                target_rows.append(
                    [
                        "regret grows sublinearly (noise 2): the slope falls after the warm-up",
                        _verdict(
                            late <= max(early / 2, SETTLED_SLOPE),
                            f"{early:.4f} then {late:.4f} per sample",
                        ),
                    ]
                )
                for p in written:
                    w(f"![{p.stem}](img/noise2/{p.name})\n")
        if cost == "measured":
            target_rows.append(
                [
                    "measured cost: mean reward within 5 % of the oracle fixed split, every "
                    "distortion",
                    _verdict(max(gaps) <= 0.05, f"worst gap {100 * max(gaps):.1f} %"),
                ]
            )

    w("## Measured cost over longer streams\n")
    long_rows = long_stream_rows(ck)
    mc = cost_model(ck, "measured")
    ratio = sum(mc.offload[:-1]) / len(mc.offload[:-1]) / mc.full_cost
    w(
        f"Why the measured-cost gap stays above 5 % after {SAMPLES} samples: an offload costs "
        f"{ratio:.1f} times the whole network there on average, and the oracle's split offloads "
        f"{100 * min(oracle_offloads):.1f} to {100 * max(oracle_offloads):.1f} % of the "
        "samples, so the best splits differ by rare, expensive events: telling them apart takes "
        "thousands of samples, and on one run the best fixed split in hindsight is itself a "
        "lucky pick among near-ties. The estimate is consistent, so the gap tends to close as "
        "samples accumulate (few runs, so the figures are noisy): I-SplitEE (recommended c) on "
        f"{LONG_RUNS} independent streams of {LONG_SAMPLES} samples, reward gap (%) to the best "
        "fixed split in hindsight over the first n samples, mean of the runs:\n"
    )
    w(format_table(["distortion", *(f"n = {n}" for n in LONG_CHECKPOINTS)], long_rows) + "\n")

    w("## Effect of the exploration constant c (recommended setting)\n")
    lo, hi = _rewards(ck, "paper", RECOMMENDED.alpha).reward_bounds
    mlo, mhi = _rewards(ck, "measured", RECOMMENDED.alpha).reward_bounds
    w(
        f"Rewards span [{lo:.2f}, {hi:.2f}] with the paper's constants and [{mlo:.2f}, "
        f"{mhi:.2f}] under the measured model. I-SplitEE's bonus is in those units (each "
        "observed mean's interval, priced like the reward), so c is a confidence level in "
        "either; larger c keeps exploring arms that are clearly worse, smaller c settles "
        f"sooner. Reward gap to the oracle (%) after {SAMPLES} samples, mean of {RUNS} runs:\n"
    )
    cs = (2.0, 1.0, 0.5, 0.25, 0.1)
    rows = []
    for cost in ("paper", "measured"):
        for spec in ("clean", "gaussian_noise:2", "gaussian_noise:3", "gaussian_blur:1"):
            streams = _streams(ck, spec, RECOMMENDED.calibration)
            res = _run(
                ck,
                streams,
                cost=cost,
                alpha=RECOMMENDED.alpha,
                policies=["oracle"],
                extra_c={f"c = {c:g}": c for c in cs},
            )
            cells = [f"{100 * res.policies[f'c = {c:g}'].reward_gap:.1f}" for c in cs]
            rows.append([cost, spec, *cells])
    w(format_table(["cost", "distortion", *(f"c = {c:g}" for c in cs)], rows) + "\n")

    w("## Changing scenes: the schedule experiment\n")
    w(
        "A stream whose distortion changes at fixed sample counts. Settling time: samples after "
        "a segment starts until, over the next 100 decisions, at least 80 % pick that segment's "
        "best split (any split within 0.01 of the best mean reward counts as best); the first "
        "segment's figure is the cold start, the others follow a change. First run shown; "
        f"cumulative reward is the mean over {RUNS} runs. The non-stationary variant is "
        f"discounted UCB (discount {DiscountedUCB.DEFAULT_DISCOUNT:g}, c "
        f"{DiscountedUCB.DEFAULT_C:g}, its defaults; its c is not swept); I-SplitEE runs with "
        f"the recommended c {RECOMMENDED.c:g} and, as `isplitee c=1`, with the paper's. A "
        "settling target is n/a when the best split did not move at a change: there is "
        "nothing to re-adapt to.\n"
    )
    schedules = (
        ("paper", "clean:2000,gaussian_noise:2:2000,gaussian_blur:1:2000"),
        ("measured", "clean:2000,gaussian_noise:3:2000,gaussian_blur:1:2000"),
    )
    for cost, sched in schedules:
        streams = _streams(ck, f"schedule:{sched}", RECOMMENDED.calibration)
        res = _run(
            ck,
            streams,
            cost=cost,
            alpha=RECOMMENDED.alpha,
            c=RECOMMENDED.c,
            policies=["isplitee", "isplitee-nonstationary", "final", "oracle"],
            extra_c={"isplitee c=1": 1.0},
        )
        text, settle = settle_table(res, ("isplitee", "isplitee c=1", "isplitee-nonstationary"))
        w(f"### {cost} cost: `schedule:{sched}`\n")
        cli = _cmd(model_path["robust"], f"schedule:{sched}", RECOMMENDED.flags())
        w(f"`{cli.replace(f' --samples {SAMPLES}', '')} --cost {cost}`\n")
        w(text + "\n")
        blocks_by_segment = settle["best_blocks"]
        if len(set(blocks_by_segment)) == 1:
            w(
                f"The best split is block {blocks_by_segment[0]} in every segment: under this "
                "cost model the change of scene does not move it, so there is nothing to "
                "re-adapt to and forgetting only costs exploration.\n"
            )
        ucb = res.policies["isplitee"].mean_reward * res.n_samples
        ucb1 = res.policies["isplitee c=1"].mean_reward * res.n_samples
        dis = res.policies["isplitee-nonstationary"].mean_reward * res.n_samples
        w(
            f"Cumulative reward over the schedule: I-SplitEE {ucb:.1f} (c = 1: {ucb1:.1f}), "
            f"non-stationary {dis:.1f}.\n"
        )
        w(simulation_table(res) + "\n")
        changes = settle["isplitee-nonstationary"][1:]
        moved = [a != b for a, b in itertools.pairwise(blocks_by_segment)]
        judged = [t for t, m in zip(changes, moved, strict=True) if m]
        figure = "after changes: " + ", ".join(
            ("never" if t is None else str(t)) + ("" if m else " (best split unchanged)")
            for t, m in zip(changes, moved, strict=True)
        )
        target_rows.append(
            [
                f"non-stationary settles within 500 samples of each change ({cost} cost)",
                _verdict(all(t is not None and t <= 500 for t in judged), figure)
                if judged
                else f"n/a ({figure}: the best split never moved)",
            ]
        )
        target_rows.append(
            [
                f"non-stationary beats I-SplitEE's cumulative reward ({cost} cost)",
                _verdict(
                    dis > max(ucb, ucb1),
                    f"{dis:.1f} vs {ucb:.1f} (c = {RECOMMENDED.c:g}), {ucb1:.1f} (c = 1)",
                ),
            ]
        )
        from shared.lab.plots import write_plots

        for p in write_plots(res, args.img / f"schedule-{cost}"):
            w(f"![{p.stem}]({p.relative_to(args.out.parent)})\n")

    first, second = time_cli(args.model)
    target_rows.append(
        [
            "`isplitee simulate` on the digits checkpoint < 3 minutes; table cached",
            _verdict(
                first < 180 and second < first,
                f"{first:.1f} s with an empty cache, {second:.1f} s with the cached table",
            ),
        ]
    )
    out[target_slot] = (
        f"Recommended setting (augmented model, raw confidence, alpha {RECOMMENDED.alpha:g}, "
        f"c {RECOMMENDED.c:g}; paper cost model unless named), checked by the generator:\n\n"
        + format_table(["target", "result"], target_rows)
        + "\n\nThe decide + observe micro-benchmark (≤ 20 µs) is in "
        "[benchmarks.md](benchmarks.md).\n"
    )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(out))
    print(f"wrote {args.out}")
    for row in target_rows:
        print(f"{row[0]}: {row[1]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
