"""``isplitee simulate``: replay a checkpoint's held-out images through every split policy.

Its defaults are the recommended setting: the audited policy as ``isplitee``, alpha
:data:`shared.cost.RECOMMENDED_ALPHA`, c 0.25, raw confidences; the paper's setting is one
flag away (``--alpha 0.5 --c 1``, and its rule is the ``isplitee-paper`` row).
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path
from typing import TYPE_CHECKING

from shared import cost as costs
from shared.lab.scenario import cost_model, parse_schedule
from shared.lab.simulate import default_policy_names
from shared.policy import AuditedSplitEE, DiscountedUCB, ISplitEE, specs_taking
from shared.protocol import NUM_BLOCKS
from shared.wire import WIRE_CHOICES

if TYPE_CHECKING:
    from shared.checkpoint import Checkpoint
    from shared.cost import CostModel
    from shared.lab.confidence import ConfidenceTable
    from shared.lab.distortions import Distortion
    from shared.lab.simulate import SimulationResult, Stream

__all__ = ["DEFAULT_SAMPLES", "add_simulate", "run_simulate"]

DEFAULT_SAMPLES = 2000
MEASURED_FLAGS = ("edge_gmacs", "edge_timing", "link_mbps", "rtt_ms", "encoding")


def add_simulate(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "simulate",
        help="evaluate split policies offline on a checkpoint's held-out images",
        description="Compute (or reuse) every exit's confidence on the held-out test images under "
        "a distortion, then run each policy on that stream and print the paper-style table.",
    )
    _add_stream_flags(p)
    _add_policy_flags(p)
    _add_measured_flags(p)
    _add_run_flags(p)
    p.set_defaults(func=run_simulate)


def _add_stream_flags(p: argparse.ArgumentParser) -> None:
    """What the policies are run on: the checkpoint, its images and their distortion."""
    p.add_argument("--model", type=Path, required=True, help="checkpoint from 'isplitee train'")
    p.add_argument("--dataset", help="override the checkpoint's dataset spec (e.g. a moved root)")
    p.add_argument(
        "--distortion",
        default="clean",
        help="clean | gaussian_noise:LEVEL | gaussian_blur:SIGMA | jpeg:QUALITY | "
        "low_light:FACTOR | schedule:D:N,D:N,...",
    )
    p.add_argument(
        "--samples",
        type=int,
        help=f"stream length of a plain distortion (default {DEFAULT_SAMPLES}); a schedule gives "
        "its own counts",
    )


def _add_policy_flags(p: argparse.ArgumentParser) -> None:
    """Which policies run, the reward they earn and their own settings."""
    p.add_argument("--policies", help="comma list; default: all policies and every fixed split")
    p.add_argument("--cost", choices=("paper", "measured"), default="paper")
    p.add_argument(
        "--alpha",
        type=float,
        default=costs.RECOMMENDED_ALPHA,
        help=f"exit threshold (default {costs.RECOMMENDED_ALPHA:g}; the paper's is "
        f"{costs.PAPER_ALPHA:g})",
    )
    p.add_argument("--mu", type=float, default=costs.PAPER_MU, help="cost weight in the reward")
    p.add_argument(
        "--gamma",
        type=float,
        default=costs.PAPER_GAMMA,
        help=f"cost per block (paper); the whole network costs gamma * {NUM_BLOCKS} in both cost "
        "models",
    )
    p.add_argument("--offload", type=float, help=f"paper: offload cost ({costs.PAPER_OFFLOAD:g})")
    p.add_argument(
        "--c",
        type=float,
        help=f"exploration of isplitee and isplitee-paper (default {ISplitEE.DEFAULT_C:g}, the "
        "recommended setting; the paper's is 1)",
    )
    p.add_argument(
        "--target",
        type=float,
        help="audited policies: largest share of frames an exit may answer differently from the "
        f"final classifier (default {AuditedSplitEE.DEFAULT_TARGET:g})",
    )
    p.add_argument(
        "--min-audit-rate",
        type=float,
        help="audited policies: audit rate once the exits keep agreeing (default "
        f"{AuditedSplitEE.DEFAULT_MIN_AUDIT_RATE:g})",
    )
    p.add_argument(
        "--c-nonstationary",
        type=float,
        help=f"exploration of the discounted variants (default {DiscountedUCB.DEFAULT_C:g})",
    )
    p.add_argument(
        "--discount",
        type=float,
        help=f"discount of the discounted variants (default {DiscountedUCB.DEFAULT_DISCOUNT:g})",
    )


def _add_measured_flags(p: argparse.ArgumentParser) -> None:
    """The measured cost model's device, link and encoding (``--cost measured`` only)."""
    p.add_argument(
        "--edge-gmacs", type=float, help=f"measured: device GMAC/s ({costs.DEFAULT_EDGE_GMACS:g})"
    )
    p.add_argument(
        "--edge-timing",
        choices=("flops", "measure"),
        help="measured: edge cost from MACs at --edge-gmacs (default), or timed on this machine "
        "(run on the device itself)",
    )
    p.add_argument(
        "--link-mbps", type=float, help=f"measured: uplink Mbit/s ({costs.DEFAULT_LINK_MBIT:g})"
    )
    p.add_argument(
        "--rtt-ms", type=float, help=f"measured: round trip ms ({costs.DEFAULT_RTT_MS:g})"
    )
    p.add_argument(
        "--encoding",
        choices=WIRE_CHOICES,
        help="measured: activation encoding (auto: per split, what the checkpoint says a node "
        "on its default sends)",
    )


def _add_run_flags(p: argparse.ArgumentParser) -> None:
    """How the confidences are read, how many runs, and where results and tables go."""
    p.add_argument(
        "--calibration",
        choices=("none", "temperature"),
        default="none",
        help="raw max-softmax confidences (the paper), or scaled by the checkpoint's per-exit "
        "temperatures",
    )
    p.add_argument(
        "--runs",
        type=int,
        default=1,
        help="independent runs, each on a fresh draw of images and distortions (seeds SEED, "
        "SEED+1, ...): the ± covers the sampling of images as well as the policies' luck",
    )
    p.add_argument("--seed", type=int, default=0, help="seed of the first run's draw")
    p.add_argument("--json", type=Path, help="write the summary as JSON here")
    p.add_argument("--plots", type=Path, help="write PNG plots into this folder")
    p.add_argument("--cache-dir", type=Path, help="confidence tables (default ~/.cache/isplitee)")
    p.add_argument("--no-cache", action="store_true", help="recompute, do not store tables")
    p.add_argument("--no-progress", action="store_true")


def _report_table(table: ConfidenceTable) -> None:
    how = (
        "drawn with replacement, fresh distortion each draw"
        if table.with_replacement
        else "without replacement"
    )
    print(
        f"{table.distortion}: {len(table)} samples from {table.test_size} held-out test images "
        f"({how}){'; cached table' if table.from_cache else ''}"
    )


def _finite(name: str, value: float | None, *, low: float = 0.0) -> None:
    if value is not None and not low <= value < math.inf:
        raise ValueError(f"{name} should be a finite number >= {low:g}, got {value!r}")


def policy_names(spec: str | None, blocks: tuple[int, ...]) -> list[str]:
    """``--policies`` as a list (default: every policy and fixed split); empty is an error."""
    if spec is None:
        return default_policy_names(blocks)
    names = [n.strip() for n in spec.split(",") if n.strip()]
    if not names:
        raise ValueError(f"--policies {spec!r} names no policy")
    return names


def check_args(args: argparse.Namespace) -> list[tuple[Distortion, int]]:
    """Refuse bad values and flags that would be ignored, before anything slow runs.

    Returns the stream's segments. Checks that need the checkpoint (policy names against its
    blocks) come after loading it, still before any confidence table is built.
    """
    if args.runs < 1:
        raise ValueError(f"--runs should be at least 1, got {args.runs}")
    schedule = args.distortion.startswith("schedule:")
    if args.samples is not None:
        if schedule:
            raise ValueError(
                "--samples does not apply to a schedule: each item gives its own count "
                "(schedule:clean:2000,...)"
            )
        if args.samples < 1:
            raise ValueError(f"--samples should be at least 1, got {args.samples}")
    parts = parse_schedule(args.distortion, args.samples or DEFAULT_SAMPLES)
    if not 0.0 <= args.alpha <= 1.0:
        raise ValueError(f"--alpha should be in [0, 1], got {args.alpha!r}")
    _finite("--mu", args.mu)
    _finite("--gamma", args.gamma)
    if not args.gamma > 0:
        raise ValueError(f"--gamma should be positive, got {args.gamma!r}")
    _finite("--offload", args.offload)
    _finite("--c", args.c)
    _finite("--c-nonstationary", args.c_nonstationary)
    for flag, value in (("--target", args.target), ("--min-audit-rate", args.min_audit_rate)):
        if value is not None and not 0.0 < value <= 1.0:
            raise ValueError(f"{flag} should be in (0, 1], got {value!r}")
    if args.discount is not None and not 0.0 < args.discount < 1.0:
        raise ValueError(f"--discount should be in (0, 1), got {args.discount!r}")
    for flag in ("edge_gmacs", "link_mbps"):
        value = getattr(args, flag)
        if value is not None and not 0 < value < math.inf:
            raise ValueError(f"--{flag.replace('_', '-')} should be positive, got {value!r}")
    _finite("--rtt-ms", args.rtt_ms)
    if args.cost == "paper":
        given = [f"--{f.replace('_', '-')}" for f in MEASURED_FLAGS if getattr(args, f) is not None]
        if given:
            raise ValueError(
                f"{', '.join(given)} {'applies' if len(given) == 1 else 'apply'} to --cost "
                "measured only; the paper cost model charges gamma per block"
            )
    else:
        if args.offload is not None:
            raise ValueError(
                "--offload applies to --cost paper only; the measured model prices each "
                "offload from its payload, --link-mbps and --rtt-ms"
            )
        if args.edge_timing == "measure" and args.edge_gmacs is not None:
            raise ValueError("--edge-gmacs does not apply with --edge-timing measure")
    if args.policies is not None:
        names = set(policy_names(args.policies, ()))
        discounted = set(specs_taking("discount"))  # their own exploration: --c-nonstationary
        plain, audited = set(specs_taking("c")) - discounted, set(specs_taking("target"))
        for flag, value, applies in (
            ("--c", args.c, plain),
            ("--c-nonstationary", args.c_nonstationary, discounted),
            ("--discount", args.discount, discounted),
            ("--target", args.target, audited),
            ("--min-audit-rate", args.min_audit_rate, audited),
        ):
            if value is not None and not names & applies:
                raise ValueError(
                    f"{flag} applies to {' and '.join(sorted(applies))}, which --policies "
                    "leaves out"
                )
    return parts


def _cost(args: argparse.Namespace, ckpt: Checkpoint) -> CostModel:
    """The cost model the flags name; the measured flags apply to the measured one only."""
    measured = {
        "time_edge": args.edge_timing == "measure",
        "edge_gmacs_per_s": args.edge_gmacs,
        "link_mbit_per_s": args.link_mbps,
        "rtt_ms": args.rtt_ms,
        "encoding": args.encoding,
    }
    measured = {k: v for k, v in measured.items() if v is not None}
    offload = costs.PAPER_OFFLOAD if args.offload is None else args.offload
    return cost_model(
        ckpt,
        args.cost,
        gamma=args.gamma,
        offload=offload,
        **(measured if args.cost == "measured" else {}),
    )


def _streams(args: argparse.Namespace, ckpt: Checkpoint, parts: list) -> list[Stream]:
    """One stream per run, each a fresh draw; the first run's table is reported."""
    from shared.lab.confidence import build_stream

    return [
        build_stream(
            ckpt,
            parts,
            calibrated=args.calibration == "temperature",
            seed=args.seed + r,
            on_table=_report_table if r == 0 else None,
            dataset=args.dataset,
            cache_dir=args.cache_dir,
            use_cache=not args.no_cache,
            progress=not args.no_progress,
        )
        for r in range(args.runs)
    ]


def _params(args: argparse.Namespace) -> dict[str, float]:
    """Every policy setting as run, defaults filled in (the JSON's ``params``)."""
    return {
        "alpha": args.alpha,
        "mu": args.mu,
        "c": ISplitEE.DEFAULT_C if args.c is None else args.c,
        "c_nonstationary": DiscountedUCB.DEFAULT_C
        if args.c_nonstationary is None
        else args.c_nonstationary,
        "discount": DiscountedUCB.DEFAULT_DISCOUNT if args.discount is None else args.discount,
        "target": AuditedSplitEE.DEFAULT_TARGET if args.target is None else args.target,
        "min_audit_rate": AuditedSplitEE.DEFAULT_MIN_AUDIT_RATE
        if args.min_audit_rate is None
        else args.min_audit_rate,
    }


def _print_result(
    args: argparse.Namespace, result: SimulationResult, blocks: tuple[int, ...], schedule: bool
) -> tuple[object, object]:
    """The summary line and table, and for a schedule the settling and after-change tables
    (returned for the JSON)."""
    from shared.lab.report import simulation_table

    print()
    print(
        f"{result.n_samples} samples, {result.runs} run(s), cost model {result.cost_model}, "
        f"alpha {args.alpha:g}, mu {args.mu:g}, c {_params(args)['c']:g}, calibration "
        f"{args.calibration}; oracle split: block {blocks[result.oracle_arm]}"
    )
    print(simulation_table(result))
    if not schedule:
        return None, None
    from shared.lab.report import change_table, settle_table

    text, settle = settle_table(result)
    print()
    print(text)
    text, after_change = change_table(result)
    print(f"\naccuracy % over the first {result.window} samples of each segment")
    print(text)
    return settle, after_change


def _write_json(
    args: argparse.Namespace,
    ckpt: Checkpoint,
    result: SimulationResult,
    settle: object,
    after_change: object,
) -> None:
    payload = {
        "n_samples": result.n_samples,
        "runs": result.runs,
        "cost_model": result.cost_model,
        "model_hash": ckpt.hash,
        "distortion": args.distortion,
        "calibration": args.calibration,
        "params": _params(args),
        "oracle_block": ckpt.meta.arm_blocks[result.oracle_arm],
        "policies": {n: s.as_json() for n, s in result.policies.items()},
    }
    if settle is not None:
        payload["settle"] = settle
        payload["after_change"] = after_change
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(payload, indent=2) + "\n")
    print(f"\nwrote {args.json}")


def run_simulate(args: argparse.Namespace) -> int:
    """``isplitee simulate``: every flag checked before the slow part, then the runs."""
    from shared.checkpoint import load_checkpoint
    from shared.cost import RewardModel
    from shared.lab.simulate import make_policy_factory, simulate

    parts = check_args(args)
    ckpt = load_checkpoint(args.model)
    blocks = ckpt.meta.arm_blocks
    names = policy_names(args.policies, blocks)
    rewards = RewardModel(_cost(args, ckpt), alpha=args.alpha, mu=args.mu)
    factories = {  # a bad policy name or setting fails here, before the slow part
        n: make_policy_factory(
            n,
            rewards,
            c=args.c,
            c_nonstationary=args.c_nonstationary,
            discount=args.discount,
            target=args.target,
            min_audit_rate=args.min_audit_rate,
        )
        for n in names
    }
    streams = _streams(args, ckpt, parts)
    if args.runs > 1:
        print(
            f"... and {args.runs - 1} more run(s), each on a fresh draw (seeds {args.seed + 1}..)"
        )
    result = simulate(streams, rewards, factories)
    settle, after_change = _print_result(args, result, blocks, len(streams[0].segments) > 1)
    if args.json:
        _write_json(args, ckpt, result, settle, after_change)
    if args.plots:
        from shared.lab.plots import write_plots

        for path in write_plots(result, args.plots):
            print(f"wrote {path}")
    return 0
