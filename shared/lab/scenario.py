"""What a simulation runs under: its stream's distortion schedule and its checkpoint's cost.

Shared by ``isplitee simulate`` and the results page (``bench/make_results.py``), so both read a
``--distortion`` spec and price a checkpoint's splits the same way. torch (distortions, the
model's profile) is imported only when a function needs it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from shared import cost as costs
from shared.wire import AUTO, wire_encodings

if TYPE_CHECKING:
    from shared.checkpoint import Checkpoint
    from shared.cost import CostModel
    from shared.lab.distortions import Distortion

__all__ = ["cost_model", "parse_schedule"]


def parse_schedule(spec: str, samples: int) -> list[tuple[Distortion, int]]:
    """``--distortion`` as (distortion, samples) segments.

    A plain distortion is one segment of ``samples``; ``schedule:clean:2000,gaussian_noise:2:2000``
    switches at the given sample counts (each item: distortion, then its count).
    """
    from shared.lab.distortions import Distortion  # torch: only for a simulation

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
    link rate, round trip, encoding); their defaults are that function's, except the encoding:
    by default each split is priced in what a node on ``encoding = "auto"`` sends.
    ``time_edge`` times the model on this machine instead of counting MACs.
    """
    from shared.cost import measured_cost, paper_cost
    from shared.profile import measure_exit_latency, profile_model

    blocks = ckpt.meta.arm_blocks
    if name == "paper":
        return paper_cost(blocks, gamma=gamma, offload=offload)
    if name != "measured":
        raise ValueError(f"cost model should be 'paper' or 'measured', got {name!r}")
    profile = profile_model(ckpt.model, ckpt.meta.input_size)
    if measured.get("encoding", AUTO) == AUTO:  # priced as a node on its default sends
        measured["encoding"] = wire_encodings(AUTO, ckpt.meta.exit_blocks, ckpt.meta.wire_encodings)
    if time_edge:
        measured["edge_seconds"] = measure_exit_latency(ckpt.model, ckpt.meta.input_size)
    return measured_cost(profile, blocks, gamma=gamma, **measured)
