"""Regenerate ``docs/results.md``: I-SplitEE, audited and not, and its baselines on the bundled
digits models.

Run: ``make results`` (trains the two digits checkpoints first if they are missing). Every figure
in the page is computed here from the checkpoints; nothing is typed in by hand. Targets are
checked in code and a missed one is printed as MISSED with its figure.
"""

from __future__ import annotations

import argparse
import functools
import itertools
import math
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from common import fill_template
from shared import cost as costs
from shared.checkpoint import Checkpoint, load_checkpoint
from shared.cost import RewardModel
from shared.lab.confidence import build_stream, build_table
from shared.lab.distortions import Distortion
from shared.lab.learnability import audit_floor, separability
from shared.lab.report import change_table, format_table, settle_table, simulation_table
from shared.lab.scenario import cost_model, parse_schedule
from shared.lab.simulate import (
    SimulationResult,
    Stream,
    default_policy_names,
    make_policy_factory,
    run_policy,
    simulate,
)
from shared.policy import THRESHOLDS as referee_thresholds
from shared.policy import AuditedSplitEE, DiscountedUCB, Referee, build_policy
from shared.profile import profile_model
from shared.wire import AUTO, wire_encodings

DISTORTIONS = (
    "clean",
    "gaussian_noise:1",
    "gaussian_noise:2",
    "gaussian_noise:3",
    "gaussian_blur:0.5",
    "gaussian_blur:1",
    "jpeg:10",
    "low_light:0.2",
)
TRUSTWORTHY = ("clean", "gaussian_noise:1", "gaussian_blur:0.5", "gaussian_blur:1")
"""Where the targets expect early exits to earn their place against offload-all (clean, mild
noise and blur)."""
SCHEDULE = "clean:2000,gaussian_noise:3:2000,low_light:0.2:2000"
WINDOW = 500
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
    Setting(
        "defaults (recommended): augmented model, raw confidence, alpha 0.8, c 0.25",
        "robust",
        0.8,
        "none",
        0.25,
    ),
    Setting(
        "defaults on the paper-recipe model (clean training): the referee does the work",
        "paper",
        0.8,
        "none",
        0.25,
    ),
    Setting("the paper's setting: paper-recipe model, alpha 0.5, c 1", "paper", 0.5, "none"),
    Setting("augmented model, alpha 0.5 (the paper's threshold)", "robust", 0.5, "none", 0.25),
    Setting(
        "augmented + temperature (distorted val), alpha 0.8: the node's confidences",
        "robust",
        0.8,
        "temperature",
        0.25,
    ),
    Setting(
        "paper-recipe model + temperature (clean val), alpha 0.8", "paper", 0.8, "temperature", 0.25
    ),
    Setting("augmented, raw confidence, alpha 0.8, c 1", "robust", 0.8, "none"),
)
RECOMMENDED = SETTINGS[0]
PAPER_MODEL_DEFAULTS = SETTINGS[1]
PAPER_C = SETTINGS[-1]


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
    """Every policy on every stream; ``extra_c`` adds rows of the paper's rule
    (``isplitee-paper``) at other c (label: c)."""
    rewards = _rewards(ckpt, cost, alpha)
    names = policies or default_policy_names(ckpt.meta.arm_blocks)
    factories = {n: make_policy_factory(n, rewards, c=c) for n in names}
    for label, other in (extra_c or {}).items():
        factories[label] = lambda r, other=other: build_policy("isplitee-paper", rewards, c=other)
    return simulate(streams, rewards, factories, window=WINDOW)


def _gaps(res: SimulationResult, name: str) -> tuple[float, float]:
    """A policy's reward gap to the oracle over the whole run and over its second half (the
    mean regret curve's rise there, against the oracle's mean reward)."""
    pol, oracle = res.policies[name], res.policies["oracle"].mean_reward
    curve = pol.regret_curve
    half = len(curve) // 2
    late = (curve[-1] - curve[half - 1]) / (len(curve) - half) / abs(oracle)
    return pol.reward_gap, float(late)


def full_information_gap(rewards: RewardModel, streams: list[Stream]) -> float:
    """Reward gap to the best fixed split in hindsight of follow-the-leader with full
    information (each sample played at the split with the best total reward so far, every
    split's reward known on every earlier sample; the first at the last split), averaged like
    :attr:`PolicySummary.reward_gap`: no bandit sees as much."""
    got, best = [], []
    for s in streams:
        m = rewards.reward_matrix(s.confidences)
        lead = np.argmax(np.cumsum(m, axis=0)[:-1], axis=1)
        choice = np.concatenate([[m.shape[1] - 1], lead])
        got.append(float(m[np.arange(len(m)), choice].mean()))
        best.append(float(m.sum(axis=0).max() / len(m)))
    oracle = float(np.mean(best))
    return (oracle - float(np.mean(got))) / abs(oracle)


POPULATION_DRAWS = 20_000
"""Draws that stand for a random distortion's population (noise is drawn afresh per draw); a
deterministic one's population is the test set itself."""


@dataclass(frozen=True)
class Learnability:
    spec: str
    best: int  # split blocks
    runner_up: int
    runner_up_gap: float
    samples_to_rank: float
    wrong_at_horizon: float
    hindsight: float
    audit_floor: float


def learnability(ckpt: Checkpoint, spec: str) -> Learnability:
    """What the measured cost leaves to learning on ``spec`` (``shared.lab.learnability``):
    the population is every test image once for a deterministic distortion, and
    POPULATION_DRAWS draws for a random one."""
    rewards = _rewards(ckpt, "measured", RECOMMENDED.alpha)
    dist = Distortion.parse(spec)
    n = POPULATION_DRAWS if dist.random else test_size(ckpt)
    table = build_table(ckpt, dist, samples=n, seed=100)
    temps = ckpt.meta.arm_temperatures() if RECOMMENDED.calibration == "temperature" else None
    conf = table.confidences(temps)
    full = rewards.reward_matrix(conf)
    sep = separability(full, SAMPLES)
    cost, mu, last = rewards.cost, rewards.mu, rewards.last
    final = float(conf[:, -1].mean())
    # an audit is the cheaper of an offload at a split and the whole network on the device
    audit = max(
        final - mu * (cost.edge[j] + (cost.offload[j] if j < last else 0.0))
        for j in range(last + 1)
    )
    best = float(full[:, sep.best].mean())
    referee = Referee(
        last, target=AuditedSplitEE.DEFAULT_TARGET, min_rate=AuditedSplitEE.DEFAULT_MIN_AUDIT_RATE
    )
    floor = audit_floor(
        best,
        best if sep.best == last else audit,
        sep.oracle,
        SAMPLES,
        audits_to_trust=referee.audits_to_trust(),
        min_rate=referee.min_rate,
    )
    blocks = ckpt.meta.arm_blocks
    return Learnability(
        spec,
        blocks[sep.best],
        blocks[sep.runner_up],
        sep.runner_up_gap,
        sep.samples_to_rank,
        sep.wrong_at_horizon,
        sep.hindsight,
        floor,
    )


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


@dataclass(frozen=True)
class Figures:
    """One distortion under one setting: what the targets are checked on."""

    spec: str
    final: float
    audited: tuple[float, float, float]  # accuracy, cost reduction, audit rate
    paper: tuple[float, float, float]  # accuracy, cost reduction, reward gap to the oracle
    offload_all: float  # cost reduction

    @property
    def loss(self) -> float:
        """Accuracy points (as a share) the audited policy loses against the final layer."""
        return self.final - self.audited[0]


def summary_rows(
    ckpts: dict[str, Checkpoint], setting: Setting, cost: str
) -> tuple[list[list[str]], list[Figures]]:
    """Per distortion: final layer, the audited policy (``isplitee``), the paper's rule
    (``isplitee-paper``, what ``isplitee`` was before issue 7) and offload-all."""
    ckpt = ckpts[setting.model]
    rows, figures = [], []
    for spec in DISTORTIONS:
        res = _run(
            ckpt,
            _streams(ckpt, spec, setting.calibration),
            cost=cost,
            alpha=setting.alpha,
            policies=["isplitee", "isplitee-paper", "offload-all", "final", "oracle"],
            c=setting.c,
        )
        a, p = res.policies["isplitee"], res.policies["isplitee-paper"]
        f, o = res.policies["final"], res.policies["offload-all"]
        fig = Figures(
            spec,
            f.accuracy,
            (a.accuracy, a.cost_reduction, a.audit_rate),
            (p.accuracy, p.cost_reduction, p.reward_gap),
            o.cost_reduction,
        )
        figures.append(fig)
        rows.append(
            [
                spec,
                f"{100 * f.accuracy:.1f}",
                f"{100 * a.accuracy:.1f} ± {100 * a.accuracy_std:.1f}",
                f"{100 * fig.loss:+.1f}",
                f"{100 * a.cost_reduction:.1f}",
                f"{100 * a.audit_rate:.1f}",
                f"{100 * p.accuracy:.1f} ± {100 * p.accuracy_std:.1f}",
                f"{100 * (f.accuracy - p.accuracy):+.1f}",
                f"{100 * p.cost_reduction:.1f}",
                f"{100 * o.cost_reduction:.1f}",
            ]
        )
    return rows, figures


SUMMARY_HEADERS = [
    "distortion",
    "final-layer acc %",
    "isplitee acc %",
    "loss (points)",
    "isplitee cost red. %",
    "audits %",
    "isplitee-paper acc %",
    "paper loss (points)",
    "paper cost red. %",
    "offload-all cost red. %",
]


def steady_state(ckpt: Checkpoint, spec: str, setting: Setting) -> float:
    """The audited policy's cost reduction over the second half of each run: what it costs
    once the cold start (earning the exits' trust through audits) is behind it."""
    rewards = _rewards(ckpt, "paper", setting.alpha)
    costs_late = [
        run_policy(build_policy("isplitee", rewards, c=setting.c), s).costs[SAMPLES // 2 :].mean()
        for s in _streams(ckpt, spec, setting.calibration)
    ]
    return 1.0 - float(np.mean(costs_late)) / rewards.cost.full_cost


def audited_targets(label: str, figs: list[Figures]) -> list[list[str]]:
    """The audited policy's targets for one model under the defaults (accuracy against the
    final layer, cost reduction, beating offload-all where exits are trustworthy), checked on
    its figures."""
    worst = max(figs, key=lambda f: f.loss)
    cheapest = min(figs, key=lambda f: f.audited[1])
    trust = [f for f in figs if f.spec in TRUSTWORTHY]
    beat = [f for f in trust if f.audited[1] > f.offload_all and f.loss <= 0.02]
    aim = min(trust, key=lambda f: f.audited[1])
    per = ", ".join(f"{f.spec} {100 * f.loss:+.1f}" for f in figs)
    return [
        [
            f"{label}: accuracy within 2 points of the final layer, every distortion",
            _verdict(worst.loss <= 0.02, f"worst {worst.spec} {100 * worst.loss:+.1f}; {per}"),
        ],
        [
            f"{label}: never worse than 5 points",
            _verdict(worst.loss <= 0.05, f"worst {100 * worst.loss:+.1f}"),
        ],
        [
            f"{label}: cost reduction ≥ 55 %, every distortion",
            _verdict(
                cheapest.audited[1] >= 0.55,
                f"worst {cheapest.spec} {100 * cheapest.audited[1]:.1f} %",
            ),
        ],
        [
            f"{label}: beats offload-all's cost at ≤ 2 points where exits are trustworthy "
            f"({', '.join(TRUSTWORTHY)})",
            _verdict(
                len(beat) == len(trust),
                f"{len(beat)} of {len(trust)}; offload-all {100 * trust[0].offload_all:.1f} %",
            ),
        ],
        [
            f"{label}: aim ≥ 65 % there",
            _verdict(aim.audited[1] >= 0.65, f"worst {aim.spec} {100 * aim.audited[1]:.1f} %"),
        ],
    ]


THRESHOLDS = (RECOMMENDED.alpha, *referee_thresholds)
BOUND_SAMPLES = 10_000


def threshold_bound_rows(
    ckpts: dict[str, Checkpoint], figures: dict[str, list[Figures]]
) -> list[list[str]]:
    """What any single exit could save at any confidence threshold, before audits: per model
    and trustworthy setting, the cheapest (exit, threshold) whose disagreement with the final
    classifier the referee could certify (:meth:`Referee.audits_needed` within its patience),
    on a long draw, under the paper's costs; beside what the audited policy (which picks a
    threshold per exit) reached and offload-all. A bound on what per-exit thresholds can add."""
    ref = Referee(1)
    rows = []
    for key, figs in figures.items():
        ck = ckpts[key]
        cost = cost_model(ck, "paper")
        reached = {f.spec: f for f in figs}
        for spec in TRUSTWORTHY:
            stream = build_stream(ck, [(Distortion.parse(spec), BOUND_SAMPLES)], seed=0)
            conf, cls = stream.confidences, stream.classes
            last = conf.shape[1] - 1
            best: dict[bool, tuple[float, int, float]] = {}
            for j, t in itertools.product(range(last), THRESHOLDS):
                confident = conf[:, j] >= t
                rate = float(np.mean(confident & (cls[:, j] != cls[:, last])))
                if ref.audits_needed(rate) > ref.patience * ref.clean_audits:
                    continue
                spend = cost.edge[j] + (1.0 - confident.mean()) * cost.offload[j]
                for any_t in (False, True):
                    if (any_t or t == RECOMMENDED.alpha) and spend < best.get(any_t, (9e9,))[0]:
                        best[any_t] = (spend, j, t)

            shown = []
            for any_t in (False, True):
                if any_t not in best:
                    shown.append("none certifiable")
                    continue
                spend, j, t = best[any_t]
                red = 1.0 - spend / cost.full_cost
                shown.append(f"{100 * red:.1f} % (block {ck.meta.arm_blocks[j]}, {t:g})")
            f = reached[spec]
            rows.append(
                [
                    key,
                    spec,
                    *shown,
                    f"{100 * f.audited[1]:.1f}",
                    f"{100 * f.offload_all:.1f}",
                ]
            )
    return rows


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
    """Reward gap of the paper's rule under the measured cost on long streams, at several
    lengths."""
    rewards = _rewards(ckpt, "measured", RECOMMENDED.alpha)
    rows = []
    for spec in ("clean", "gaussian_blur:1"):
        gaps = np.zeros(len(LONG_CHECKPOINTS))
        for r in range(LONG_RUNS):
            parts = parse_schedule(spec, LONG_SAMPLES)
            stream = build_stream(ckpt, parts, calibrated=False, seed=100 + r)
            full = rewards.reward_matrix(stream.confidences)
            policy = build_policy("isplitee-paper", rewards, c=RECOMMENDED.c)
            got = run_policy(policy, stream).rewards
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


TEMPLATES = Path(__file__).resolve().parent / "templates" / "results"
"""The page's prose: ``page.md`` and the parts it repeats, filled by :func:`fill`."""
fill = functools.partial(fill_template, TEMPLATES)
"""Template ``name`` of :data:`TEMPLATES`, every placeholder filled from the keywords."""

TARGET_HEADERS = ["target", "result"]
THRESHOLD_HEADERS = [
    "model",
    "distortion",
    "best at alpha 0.8 (no audits)",
    "best at any threshold (no audits)",
    "isplitee reached %",
    "offload-all %",
]
LEARNABILITY_HEADERS = [
    "distortion",
    "best split",
    "runner-up (+gap %)",
    "samples to rank them",
    f"wrong after {SAMPLES}",
    "hindsight (any policy)",
    "audit floor (audited)",
    "full-information follow-the-leader",
    "isplitee-paper",
    "isplitee (audited)",
]
EXPLORATION_CS = (2.0, 1.0, 0.5, 0.25, 0.1)
CHANGE_POLICIES = [
    "isplitee",
    "isplitee-nonstationary",
    "isplitee-paper",
    "isplitee-paper-nonstationary",
    "offload-all",
    "final",
]
SETTLE_SCHEDULES = (
    ("paper", "clean:2000,gaussian_noise:2:2000,gaussian_blur:1:2000"),
    ("measured", "clean:2000,gaussian_noise:3:2000,gaussian_blur:1:2000"),
)
MODEL_LABELS = {"paper": "paper recipe (clean images only)", "robust": "augmented"}


def _blocks(parts: list[str]) -> str:
    """Parts of a section, a blank line apart."""
    return "\n\n".join(parts)


def _plot_links(paths: list[Path], base: Path) -> list[str]:
    return [f"![{p.stem}]({p.relative_to(base)})" for p in paths]


@dataclass
class Run:
    """What every section reads: the checkpoints, their paths and where plots go."""

    ckpts: dict[str, Checkpoint]
    paths: dict[str, Path]
    img: Path
    out: Path

    @property
    def robust(self) -> Checkpoint:
        return self.ckpts["robust"]


def model_sections(run: Run) -> str:
    """One part per model: where it is, how it was trained and its exit table."""
    parts = []
    for key in ("paper", "robust"):
        ck = run.ckpts[key]
        notes = ", ".join(f"{k} {v}" for k, v in sorted(ck.meta.notes.items()))
        parts.append(
            fill(
                "model.md",
                label=MODEL_LABELS[key],
                path=run.paths[key],
                hash=ck.short_hash,
                notes=notes,
                exit_table=exit_table(ck),
            )
        )
    return _blocks(parts)


def default_setting_targets(
    run: Run, summaries: dict[Setting, tuple[list[list[str]], list[Figures]]]
) -> list[list[str]]:
    """The defaults' targets on both models, why the cost reduction is what it is (the cold
    start of audits), and the paper rule's gap to the oracle."""
    rec_figs = summaries[RECOMMENDED][1]
    rows = audited_targets("defaults, augmented model", rec_figs)
    rows += audited_targets("defaults, paper-recipe model", summaries[PAPER_MODEL_DEFAULTS][1])
    for key, setting in (("robust", RECOMMENDED), ("paper", PAPER_MODEL_DEFAULTS)):
        figs = summaries[setting][1]
        aim = min((f for f in figs if f.spec in TRUSTWORTHY), key=lambda f: f.audited[1])
        late = steady_state(run.ckpts[key], aim.spec, setting)
        rows.append(
            [
                f"(why: {key} model, {aim.spec}) cost reduction over samples "
                f"{SAMPLES // 2}..{SAMPLES}, after the cold start of audits",
                f"{100 * late:.1f} % (over all {SAMPLES}: {100 * aim.audited[1]:.1f} %)",
            ]
        )
    worst_gap = max(f.paper[2] for f in rec_figs)
    paper_c_gap = max(f.paper[2] for f in summaries[PAPER_C][1])
    rows += [
        [
            f"isplitee-paper: mean reward within 5 % of the oracle fixed split after {SAMPLES} "
            "samples (augmented model, alpha 0.8, c 0.25)",
            _verdict(worst_gap <= 0.05, f"worst gap {100 * worst_gap:.1f} %"),
        ],
        [
            "the same with the paper's c = 1",
            _verdict(paper_c_gap <= 0.05, f"worst gap {100 * paper_c_gap:.1f} %"),
        ],
    ]
    return rows


def referee_figures(ref: Referee) -> dict[str, object]:
    """The referee's constants and its stated bound, as the page quotes them."""
    wait = math.ceil(1 / ref.min_rate)
    return {
        "ref_target": f"{100 * ref.target:g}",
        "ref_z": f"{ref.z:g}",
        "ref_min_rate": f"{100 * ref.min_rate:g}",
        "ref_max_rate": f"{100 * ref.max_rate:g}",
        "ref_shift": f"{ref.shift:g}",
        "ref_decay": f"{ref.decay:g}",
        "ref_wait": wait,
        "ref_disagreements": ref.disagreements_to_distrust(),
        "ref_bound": wait + ref.disagreements_to_distrust(),
        "ref_audits_to_trust": ref.audits_to_trust(),
    }


def setting_sections(
    run: Run, summaries: dict[Setting, tuple[list[list[str]], list[Figures]]]
) -> str:
    """One part per setting: its flags, its worst figures and its table."""
    parts = []
    for setting in SETTINGS:
        rows, figs = summaries[setting]
        worst = max(figs, key=lambda f: f.loss)
        parts.append(
            fill(
                "setting.md",
                label=setting.label,
                path=run.paths[setting.model],
                flags=setting.flags(),
                worst_reduction=f"{100 * min(f.audited[1] for f in figs):.1f}",
                worst_loss=f"{100 * worst.loss:+.1f}",
                worst_spec=worst.spec,
                table=format_table(SUMMARY_HEADERS, rows),
            )
        )
    return _blocks(parts)


def measured_costs_text(ck: Checkpoint) -> str:
    """What the measured cost model charges, and why offloading is the expensive path."""
    mc = cost_model(ck, "measured")
    prof = profile_model(ck.model, ck.meta.input_size)
    full_macs = prof.macs_to_split(ck.meta.arm_blocks[-1])
    auto = wire_encodings(AUTO, ck.meta.exit_blocks, ck.meta.wire_encodings)
    return fill(
        "measured_costs.md",
        edge_gmacs=f"{costs.DEFAULT_EDGE_GMACS:g}",
        link_mbit=f"{costs.DEFAULT_LINK_MBIT:g}",
        rtt_ms=f"{costs.DEFAULT_RTT_MS:g}",
        sent=", ".join(f"block {b} {e}" for b, e in auto.items()),
        full_cost=f"{mc.full_cost:g}",
        edge_costs=", ".join(f"{x:.2f}" for x in mc.edge),
        offload_costs=", ".join(f"{x:.2f}" for x in mc.offload[:-1]),
        input_size=ck.meta.input_size,
        full_mmac=f"{full_macs / 1e6:.1f}",
        full_ms=f"{full_macs / (costs.DEFAULT_EDGE_GMACS * 1e9) * 1e3:.1f}",
    )


def regret_text(run: Run, res: SimulationResult) -> tuple[str, list[str]]:
    """The paper rule's regret on noise 2 with its plots, and whether it grows sublinearly."""
    from shared.lab.plots import write_plots

    written = write_plots(res, run.img / "noise2")
    curve = res.policies["isplitee-paper"].regret_curve
    early, late = _slopes(curve)
    n = len(curve)
    text = fill(
        "regret.md",
        runs=RUNS,
        quarter=n // 4,
        half=n // 2,
        three_quarters=3 * n // 4,
        n=n,
        regrets=", ".join(f"{curve[k - 1]:.1f}" for k in (n // 4, n // 2, 3 * n // 4, n)),
        early=f"{early:.4f}",
        late=f"{late:.4f}",
        settled_slope=f"{SETTLED_SLOPE:g}",
    )
    links = [f"![{p.stem}](img/noise2/{p.name})" for p in written]
    row = [
        "isplitee-paper: regret grows sublinearly (noise 2): the slope falls after the warm-up",
        _verdict(late <= max(early / 2, SETTLED_SLOPE), f"{early:.4f} then {late:.4f} per sample"),
    ]
    return _blocks([text, *links]), [row]


@dataclass
class MeasuredGaps:
    """Per distortion under the measured cost, what the learnability section compares."""

    spec: str
    follow_the_leader: float
    paper_rule: float
    audited: float
    audited_late: float


def learnability_text(ck: Checkpoint, gaps: list[MeasuredGaps]) -> tuple[str, list[Learnability]]:
    """How close any policy could come under the measured cost, beside what each reached."""
    learn = [learnability(ck, g.spec) for g in gaps]
    rows = [
        [
            g.spec,
            f"block {x.best}",
            f"block {x.runner_up} (+{100 * x.runner_up_gap:.1f})",
            "never" if math.isinf(x.samples_to_rank) else f"{x.samples_to_rank:,.0f}",
            f"{100 * x.wrong_at_horizon:.0f} %",
            f"{100 * x.hindsight:.1f}",
            f"{100 * x.audit_floor:.1f}",
            *(f"{100 * v:.1f}" for v in (g.follow_the_leader, g.paper_rule, g.audited)),
        ]
        for g, x in zip(gaps, learn, strict=True)
    ]
    text = fill(
        "learnability.md",
        n_test=test_size(ck),
        population_draws=POPULATION_DRAWS,
        samples=SAMPLES,
        audits_to_trust=Referee(len(ck.meta.arm_blocks) - 1).audits_to_trust(),
        min_audit_rate=f"{100 * AuditedSplitEE.DEFAULT_MIN_AUDIT_RATE:g}",
        runs=RUNS,
        table=format_table(LEARNABILITY_HEADERS, rows),
    )
    return text, learn


def measured_targets(gaps: list[MeasuredGaps], learn: list[Learnability]) -> list[list[str]]:
    """The measured cost's targets, and why the gap to the oracle is what it is."""
    worst_paper = max(g.paper_rule for g in gaps)
    unranked = [x for x in learn if x.samples_to_rank > SAMPLES and x.runner_up_gap > 0.05]
    hind = max(learn, key=lambda x: x.hindsight)
    hard = [g for g in gaps if g.follow_the_leader > 0.05]
    floor = max(learn, key=lambda x: x.audit_floor)
    worst = max(gaps, key=lambda g: g.audited)
    late = max(gaps, key=lambda g: g.audited_late)
    return [
        [
            "isplitee-paper, measured cost: mean reward within 5 % of the oracle fixed "
            "split, every distortion",
            _verdict(worst_paper <= 0.05, f"worst gap {100 * worst_paper:.1f} %"),
        ],
        [
            "(why) measured cost: distortions where the runner-up split costs over 5 % "
            f"and even full information needs more than {SAMPLES} samples to rank it "
            "below the best (2 standard errors)",
            f"{len(unranked)} of {len(learn)} ("
            + ", ".join(
                f"{x.spec}: blocks {x.best} / {x.runner_up}, +{100 * x.runner_up_gap:.1f} "
                f"%, {x.samples_to_rank:,.0f} samples, wrong after {SAMPLES}: "
                f"{100 * x.wrong_at_horizon:.0f} %"
                for x in unranked
            )
            + ")",
        ],
        [
            "(why) measured cost: hindsight, the part of the gap no policy can avoid, "
            "every distortion",
            f"worst {100 * hind.hindsight:.1f} % ({hind.spec})",
        ],
        [
            "(why) full-information follow-the-leader, measured cost: gap to the oracle "
            f"fixed split, every distortion (what following the data costs at {SAMPLES} "
            "samples, seeing every split's reward)",
            f"above 5 % on {len(hard)} of {len(gaps)} ("
            + ", ".join(f"{g.spec} {100 * g.follow_the_leader:.1f} %" for g in hard)
            + f"); worst {100 * max(g.follow_the_leader for g in gaps):.1f} %",
        ],
        [
            "(why) isplitee (audited), measured cost: the least gap the referee's "
            "guarantee costs (cold-start audits, then the minimum audit rate)",
            f"worst {100 * floor.audit_floor:.1f} % ({floor.spec}); "
            + ", ".join(f"{x.spec} {100 * x.audit_floor:.1f}" for x in learn),
        ],
        [
            "isplitee (the default, audited), measured cost: mean reward within 5 % of "
            "the oracle fixed split, every distortion",
            _verdict(
                worst.audited <= 0.05,
                f"worst gap {100 * worst.audited:.1f} % ({worst.spec}); over samples "
                f"{SAMPLES // 2}..{SAMPLES}, after earning trust: worst "
                f"{100 * late.audited_late:.1f} % ({late.spec}); per distortion, all / second "
                "half: "
                + ", ".join(
                    f"{g.spec} {100 * g.audited:.1f} / {100 * g.audited_late:.1f}" for g in gaps
                ),
            ),
        ],
    ]


@dataclass
class FullTables:
    """The full tables' text, the targets they check and the oracle's offload rates."""

    text: str
    targets: list[list[str]]
    oracle_offloads: list[float]


def cost_tables(run: Run, cost: str) -> FullTables:
    """Every distortion under the defaults and one cost model: each policy's full table."""
    ck, targets, offloads, gaps, results = run.robust, [], [], [], []
    for spec in DISTORTIONS:
        streams = _streams(ck, spec, RECOMMENDED.calibration)
        res = _run(ck, streams, cost=cost, alpha=RECOMMENDED.alpha, c=RECOMMENDED.c)
        regret = ""
        if cost == "measured":
            ftl = full_information_gap(_rewards(ck, cost, RECOMMENDED.alpha), streams)
            paper_gap = res.policies["isplitee-paper"].reward_gap
            gaps.append(MeasuredGaps(spec, ftl, paper_gap, *_gaps(res, "isplitee")))
            offloads.append(res.policies["oracle"].offload_rate)
        elif spec == "gaussian_noise:2":
            text, rows = regret_text(run, res)
            regret, targets = "\n\n" + text, targets + rows
        flags = RECOMMENDED.flags() + (" --cost measured" if cost == "measured" else "")
        results.append(
            fill(
                "spec_result.md",
                spec=spec,
                command=_cmd(run.paths["robust"], spec, flags),
                table=simulation_table(res),
                regret=regret,
            )
        )
    measured_costs = learn_text = ""
    if cost == "measured":
        measured_costs = measured_costs_text(ck) + "\n\n"
        text, learn = learnability_text(ck, gaps)
        learn_text = "\n\n" + text
        targets = targets + measured_targets(gaps, learn)
    text = fill(
        "cost_tables.md",
        cost=cost,
        measured_costs=measured_costs,
        spec_results=_blocks(results),
        learnability=learn_text,
    )
    return FullTables(text, targets, offloads)


def long_stream_figures(ck: Checkpoint, oracle_offloads: list[float]) -> dict[str, object]:
    """Why the measured-cost gap stays open, and how it closes on longer streams."""
    rows = long_stream_rows(ck)
    mc = cost_model(ck, "measured")
    return {
        "offload_ratio": f"{sum(mc.offload[:-1]) / len(mc.offload[:-1]) / mc.full_cost:.1f}",
        "oracle_offload_min": f"{100 * min(oracle_offloads):.1f}",
        "oracle_offload_max": f"{100 * max(oracle_offloads):.1f}",
        "long_runs": LONG_RUNS,
        "long_samples": LONG_SAMPLES,
        "long_stream_table": format_table(
            ["distortion", *(f"n = {n}" for n in LONG_CHECKPOINTS)], rows
        ),
    }


def exploration_figures(ck: Checkpoint) -> dict[str, object]:
    """The reward ranges c is priced in, and the paper rule's gap at each c."""
    lo, hi = _rewards(ck, "paper", RECOMMENDED.alpha).reward_bounds
    mlo, mhi = _rewards(ck, "measured", RECOMMENDED.alpha).reward_bounds
    rows = []
    for cost in ("paper", "measured"):
        for spec in ("clean", "gaussian_noise:2", "gaussian_noise:3", "gaussian_blur:1"):
            res = _run(
                ck,
                _streams(ck, spec, RECOMMENDED.calibration),
                cost=cost,
                alpha=RECOMMENDED.alpha,
                policies=["oracle"],
                extra_c={f"c = {c:g}": c for c in EXPLORATION_CS},
            )
            cells = [f"{100 * res.policies[f'c = {c:g}'].reward_gap:.1f}" for c in EXPLORATION_CS]
            rows.append([cost, spec, *cells])
    heads = ["cost", "distortion", *(f"c = {c:g}" for c in EXPLORATION_CS)]
    return {
        "paper_low": f"{lo:.2f}",
        "paper_high": f"{hi:.2f}",
        "measured_low": f"{mlo:.2f}",
        "measured_high": f"{mhi:.2f}",
        "exploration_table": format_table(heads, rows),
    }


def _schedule_command(path: Path, schedule: str) -> str:
    """The CLI line of a schedule run (a schedule gives its own sample counts)."""
    return _cmd(path, f"schedule:{schedule}", RECOMMENDED.flags()).replace(
        f" --samples {SAMPLES}", ""
    )


def change_sections(run: Run) -> tuple[str, list[list[str]]]:
    """Accuracy after each change of scene, per model, and its targets."""
    parts, targets = [], []
    for key, label in (("robust", "augmented model"), ("paper", "paper-recipe model")):
        ckpt = run.ckpts[key]
        res = _run(
            ckpt,
            _streams(ckpt, f"schedule:{SCHEDULE}", RECOMMENDED.calibration),
            cost="paper",
            alpha=RECOMMENDED.alpha,
            c=RECOMMENDED.c,
            policies=CHANGE_POLICIES,
        )
        text, _ = change_table(res)
        parts.append(
            fill(
                "change_scene.md",
                label=label,
                command=_schedule_command(run.paths[key], SCHEDULE),
                change_table=text,
                simulation_table=simulation_table(res),
            )
        )
        final_seg = res.policies["final"].segment_accuracy
        for name in ("isplitee", "isplitee-paper"):
            seg = res.policies[name].segment_accuracy
            short = [f - a for f, a in zip(final_seg[1:], seg[1:], strict=True)]
            figure = ", ".join(
                f"{g.name} {100 * x:+.1f}" for g, x in zip(res.segments[1:], short, strict=True)
            )
            targets.append(
                [
                    f"{name}, {label}: after each change of `{SCHEDULE}`, accuracy over the "
                    f"next {WINDOW} samples within 5 points of the final layer's",
                    _verdict(
                        max(short) <= 0.05,
                        f"shortfall {figure}; cost reduction "
                        f"{100 * res.policies[name].cost_reduction:.1f} %",
                    ),
                ]
            )
    return _blocks(parts), targets


def settle_targets(cost: str, settle: dict, rewards: tuple[float, float, float]) -> list[list[str]]:
    """Whether the non-stationary rule settles after each change and out-earns the paper's."""
    ucb, ucb1, dis = rewards
    changes = settle["isplitee-paper-nonstationary"][1:]
    moved = [a != b for a, b in itertools.pairwise(settle["best_blocks"])]
    judged = [t for t, m in zip(changes, moved, strict=True) if m]
    figure = "after changes: " + ", ".join(
        ("never" if t is None else str(t)) + ("" if m else " (best split unchanged)")
        for t, m in zip(changes, moved, strict=True)
    )
    return [
        [
            f"isplitee-paper-nonstationary settles within 500 samples of each change ({cost} cost)",
            _verdict(all(t is not None and t <= 500 for t in judged), figure)
            if judged
            else f"n/a ({figure}: the best split never moved)",
        ],
        [
            f"isplitee-paper-nonstationary beats isplitee-paper's cumulative reward ({cost} cost)",
            _verdict(
                dis > max(ucb, ucb1),
                f"{dis:.1f} vs {ucb:.1f} (c = {RECOMMENDED.c:g}), {ucb1:.1f} (c = 1)",
            ),
        ],
    ]


def settle_sections(run: Run) -> tuple[str, list[list[str]]]:
    """The paper's rule settling on the best split after each change, per cost model."""
    from shared.lab.plots import write_plots

    ck, parts, targets = run.robust, [], []
    for cost, sched in SETTLE_SCHEDULES:
        res = _run(
            ck,
            _streams(ck, f"schedule:{sched}", RECOMMENDED.calibration),
            cost=cost,
            alpha=RECOMMENDED.alpha,
            c=RECOMMENDED.c,
            policies=["isplitee-paper", "isplitee-paper-nonstationary", "final", "oracle"],
            extra_c={"isplitee-paper c=1": 1.0},
        )
        text, settle = settle_table(
            res, ("isplitee-paper", "isplitee-paper c=1", "isplitee-paper-nonstationary")
        )
        blocks = settle["best_blocks"]
        unmoved = ""
        if len(set(blocks)) == 1:
            unmoved = fill("settle_unmoved.md", block=blocks[0]) + "\n\n"
        rewards = tuple(
            res.policies[name].mean_reward * res.n_samples
            for name in ("isplitee-paper", "isplitee-paper c=1", "isplitee-paper-nonstationary")
        )
        plots = _plot_links(write_plots(res, run.img / f"schedule-{cost}"), run.out.parent)
        parts.append(
            fill(
                "settle.md",
                cost=cost,
                schedule=sched,
                command=_schedule_command(run.paths["robust"], sched),
                settle_table=text,
                unmoved=unmoved,
                paper_c_reward=f"{rewards[0]:.1f}",
                paper_c1_reward=f"{rewards[1]:.1f}",
                nonstationary_reward=f"{rewards[2]:.1f}",
                simulation_table=simulation_table(res),
                plots="".join(f"\n\n{link}" for link in plots),
            )
        )
        targets += settle_targets(cost, settle, rewards)
    return _blocks(parts), targets


def timing_target(model: Path) -> list[str]:
    """``isplitee simulate`` on the checkpoint: fast, and faster with its table cached."""
    first, second = time_cli(model)
    return [
        "`isplitee simulate` on the digits checkpoint < 3 minutes; table cached",
        _verdict(
            first < 180 and second < first,
            f"{first:.1f} s with an empty cache, {second:.1f} s with the cached table",
        ),
    ]


def constants() -> dict[str, object]:
    """The run's settings as the page quotes them."""
    return {
        "runs": RUNS,
        "samples": SAMPLES,
        "window": WINDOW,
        "schedule": SCHEDULE,
        "alpha": f"{RECOMMENDED.alpha:g}",
        "c": f"{RECOMMENDED.c:g}",
        "referee_target": f"{100 * AuditedSplitEE.DEFAULT_TARGET:g}",
        "referee_thresholds": ", ".join(f"{t:g}" for t in referee_thresholds),
        "bound_thresholds": ", ".join(f"{t:g}" for t in THRESHOLDS),
        "bound_samples": BOUND_SAMPLES,
        "ucb_discount": f"{DiscountedUCB.DEFAULT_DISCOUNT:g}",
        "ucb_c": f"{DiscountedUCB.DEFAULT_C:g}",
    }


def build_page(run: Run) -> tuple[str, list[list[str]]]:
    """Every section's figures, computed in the page's order, and the filled page."""
    summaries = {
        setting: summary_rows(run.ckpts, setting, "paper")
        for setting in SETTINGS  # the slow part: every setting x distortion x run
    }
    targets = default_setting_targets(run, summaries)
    bound_rows = threshold_bound_rows(
        run.ckpts,
        {"robust": summaries[RECOMMENDED][1], "paper": summaries[PAPER_MODEL_DEFAULTS][1]},
    )
    tables = [cost_tables(run, cost) for cost in ("paper", "measured")]
    for t in tables:
        targets += t.targets
    long_streams = long_stream_figures(run.robust, tables[-1].oracle_offloads)
    exploration = exploration_figures(run.robust)
    changes, change_rows = change_sections(run)
    settles, settle_rows = settle_sections(run)
    targets += change_rows + settle_rows + [timing_target(run.paths["robust"])]
    page = fill(
        "page.md",
        **constants(),
        **referee_figures(Referee(len(run.robust.meta.arm_blocks) - 1)),
        **long_streams,
        **exploration,
        n_test=test_size(run.robust),
        models=model_sections(run),
        target_table=format_table(TARGET_HEADERS, targets),
        setting_sections=setting_sections(run, summaries),
        threshold_table=format_table(THRESHOLD_HEADERS, bound_rows),
        full_tables=_blocks([t.text for t in tables]),
        change_sections=changes,
        settle_sections=settles,
    )
    return page, targets


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=Path("models/digits.pt"))
    parser.add_argument("--paper-model", type=Path, default=Path("models/digits-paper.pt"))
    parser.add_argument("--out", type=Path, default=Path("docs/results.md"))
    parser.add_argument("--img", type=Path, default=Path("docs/img"))
    args = parser.parse_args()
    run = Run(
        ckpts={"robust": load_checkpoint(args.model), "paper": load_checkpoint(args.paper_model)},
        paths={"robust": args.model, "paper": args.paper_model},
        img=args.img,
        out=args.out,
    )
    page, targets = build_page(run)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(page)
    print(f"wrote {args.out}")
    for row in targets:
        print(f"{row[0]}: {row[1]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
