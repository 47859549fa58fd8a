"""``isplitee simulate``: replay a checkpoint's held-out images through every split policy."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from shared import cost as costs
from shared.bandit import DiscountedUCB, ISplitEE
from shared.lab.distortions import Distortion

if TYPE_CHECKING:
    from shared.checkpoint import Checkpoint
    from shared.cost import CostModel
    from shared.lab.confidence import ConfidenceTable

__all__ = ["add_simulate", "cost_model", "parse_schedule", "run_simulate"]


def parse_schedule(spec: str, samples: int) -> list[tuple[Distortion, int]]:
    """``--distortion`` as (distortion, samples) segments.

    A plain distortion is one segment of ``samples``; ``schedule:clean:2000,gaussian_noise:2:2000``
    switches at the given sample counts (each item: distortion, then its count).
    """
    if not spec.startswith("schedule:"):
        return [(Distortion.parse(spec), samples)]
    segments = []
    for item in spec[len("schedule:") :].split(","):
        head, _, count = item.strip().rpartition(":")
        try:
            n = int(count)
            distortion = Distortion.parse(head)
        except ValueError as exc:
            raise ValueError(
                f"schedule item {item!r} should be DISTORTION:COUNT, e.g. clean:2000 or "
                f"gaussian_noise:2:2000 ({exc})"
            ) from None
        if n < 1:
            raise ValueError(f"schedule item {item!r}: sample count should be at least 1")
        segments.append((distortion, n))
    if not segments:
        raise ValueError("schedule: needs at least one item, e.g. schedule:clean:2000")
    return segments


def add_simulate(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "simulate",
        help="evaluate split policies offline on a checkpoint's held-out images",
        description="Compute (or reuse) every exit's confidence on the held-out test images under "
        "a distortion, then run each policy on that stream and print the paper-style table.",
    )
    p.add_argument("--model", type=Path, required=True, help="checkpoint from 'isplitee train'")
    p.add_argument("--dataset", help="override the checkpoint's dataset spec (e.g. a moved root)")
    p.add_argument(
        "--distortion",
        default="clean",
        help="clean | gaussian_noise:LEVEL | gaussian_blur:SIGMA | schedule:D:N,D:N,...",
    )
    p.add_argument("--samples", type=int, default=2000, help="stream length (plain distortion)")
    p.add_argument("--policies", help="comma list; default: all policies and every fixed split")
    p.add_argument("--cost", choices=("paper", "measured"), default="paper")
    p.add_argument("--alpha", type=float, default=costs.PAPER_ALPHA, help="exit threshold")
    p.add_argument("--mu", type=float, default=costs.PAPER_MU, help="cost weight in the reward")
    p.add_argument("--gamma", type=float, default=costs.PAPER_GAMMA, help="paper cost per block")
    p.add_argument("--offload", type=float, default=costs.PAPER_OFFLOAD, help="paper offload cost")
    p.add_argument("--c", type=float, default=ISplitEE.DEFAULT_C, help="I-SplitEE exploration")
    p.add_argument(
        "--c-nonstationary",
        type=float,
        default=DiscountedUCB.DEFAULT_C,
        help="exploration of the discounted variant",
    )
    p.add_argument(
        "--discount", type=float, default=DiscountedUCB.DEFAULT_DISCOUNT, help="discounted variant"
    )
    p.add_argument(
        "--edge-gmacs", type=float, default=costs.DEFAULT_EDGE_GMACS, help="measured: device GMAC/s"
    )
    p.add_argument(
        "--edge-timing",
        choices=("flops", "measure"),
        default="flops",
        help="measured: edge cost from MACs at --edge-gmacs, or timed on this machine "
        "(run on the device itself)",
    )
    p.add_argument(
        "--link-mbps", type=float, default=costs.DEFAULT_LINK_MBIT, help="measured: uplink Mbit/s"
    )
    p.add_argument(
        "--rtt-ms", type=float, default=costs.DEFAULT_RTT_MS, help="measured: round trip ms"
    )
    p.add_argument(
        "--encoding", choices=sorted(costs.BYTES_PER_ELEMENT), default=costs.DEFAULT_ENCODING
    )
    p.add_argument(
        "--calibration",
        choices=("none", "temperature"),
        default="none",
        help="raw max-softmax confidences (the paper), or scaled by the checkpoint's per-exit "
        "temperatures",
    )
    p.add_argument("--runs", type=int, default=1, help="repeats on reshuffled streams")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", type=Path, help="write the summary as JSON here")
    p.add_argument("--plots", type=Path, help="write PNG plots into this folder")
    p.add_argument("--cache-dir", type=Path, help="confidence tables (default ~/.cache/isplitee)")
    p.add_argument("--no-cache", action="store_true", help="recompute, do not store tables")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=run_simulate)


def cost_model(
    ckpt: Checkpoint,
    name: str,
    *,
    gamma: float = costs.PAPER_GAMMA,
    offload: float = costs.PAPER_OFFLOAD,
    time_edge: bool = False,
    **measured: Any,
) -> CostModel:
    """The ``paper`` or ``measured`` cost model for a checkpoint.

    ``measured`` takes the keyword arguments of :func:`shared.cost.measured_cost` (device rate,
    link rate, round trip, encoding); their defaults are that function's. ``time_edge`` times
    the model on this machine instead of counting MACs.
    """
    from shared.cost import measured_cost, paper_cost
    from shared.profile import measure_exit_latency, profile_model

    blocks = ckpt.meta.arm_blocks
    if name == "paper":
        return paper_cost(blocks, gamma=gamma, offload=offload)
    if name != "measured":
        raise ValueError(f"cost model should be 'paper' or 'measured', got {name!r}")
    profile = profile_model(ckpt.model, ckpt.meta.input_size)
    if time_edge:
        measured["edge_seconds"] = measure_exit_latency(ckpt.model, ckpt.meta.input_size)
    return measured_cost(profile, blocks, gamma=gamma, **measured)


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


def run_simulate(args: argparse.Namespace) -> int:
    from shared.checkpoint import load_checkpoint
    from shared.cost import RewardModel
    from shared.lab.confidence import build_stream
    from shared.lab.simulate import default_policy_names, make_policy_factory, simulate

    parts = parse_schedule(args.distortion, args.samples)
    ckpt = load_checkpoint(args.model)
    blocks = ckpt.meta.arm_blocks
    names = (
        [n.strip() for n in args.policies.split(",") if n.strip()]
        if args.policies
        else default_policy_names(blocks)
    )
    factories = {
        n: make_policy_factory(
            n, blocks, c=args.c, c_nonstationary=args.c_nonstationary, discount=args.discount
        )
        for n in names
    }
    measured = {
        "time_edge": args.edge_timing == "measure",
        "edge_gmacs_per_s": args.edge_gmacs,
        "link_mbit_per_s": args.link_mbps,
        "rtt_ms": args.rtt_ms,
        "encoding": args.encoding,
    }
    cost = cost_model(
        ckpt,
        args.cost,
        gamma=args.gamma,
        offload=args.offload,
        **(measured if args.cost == "measured" else {}),
    )
    rewards = RewardModel(cost, alpha=args.alpha, mu=args.mu)
    stream = build_stream(
        ckpt,
        parts,
        calibrated=args.calibration == "temperature",
        seed=args.seed,
        on_table=_report_table,
        dataset=args.dataset,
        cache_dir=args.cache_dir,
        use_cache=not args.no_cache,
        progress=not args.no_progress,
    )
    result = simulate(stream, rewards, factories, runs=args.runs, seed=args.seed)

    from shared.lab.report import simulation_table

    print()
    print(
        f"{result.n_samples} samples, {result.runs} run(s), cost model {result.cost_model}, "
        f"alpha {args.alpha:g}, mu {args.mu:g}, c {args.c:g}, calibration {args.calibration}; "
        f"oracle split: block {blocks[result.oracle_arm]}"
    )
    print(simulation_table(result))
    settle = None
    if len(stream.segments) > 1:
        from shared.lab.report import settle_table

        text, settle = settle_table(result)
        print()
        print(text)
    if args.json:
        payload = {
            "n_samples": result.n_samples,
            "runs": result.runs,
            "cost_model": result.cost_model,
            "model_hash": ckpt.hash,
            "distortion": args.distortion,
            "calibration": args.calibration,
            "params": {
                "alpha": args.alpha,
                "mu": args.mu,
                "c": args.c,
                "c_nonstationary": args.c_nonstationary,
                "discount": args.discount,
            },
            "oracle_block": blocks[result.oracle_arm],
            "policies": {n: s.as_json() for n, s in result.policies.items()},
        }
        if settle is not None:
            payload["settle"] = settle
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(payload, indent=2) + "\n")
        print(f"\nwrote {args.json}")
    if args.plots:
        from shared.lab.plots import write_plots

        for path in write_plots(result, args.plots):
            print(f"wrote {path}")
    return 0
