from __future__ import annotations

import pytest

from shared.cost import RewardModel, measured_cost, paper_cost
from shared.model import MultiExitMobileNetV2
from shared.profile import profile_model
from shared.protocol import HEADER_BYTES

BLOCKS = (3, 6, 9, 12, 15, 18, 19)


def test_paper_constants() -> None:
    cost = paper_cost(BLOCKS)
    assert cost.edge == pytest.approx((0.3, 0.6, 0.9, 1.2, 1.5, 1.8, 1.9))
    assert cost.offload == pytest.approx((0.5,) * 7)
    assert cost.full_cost == pytest.approx(1.9)
    rm = RewardModel(cost)
    assert (rm.alpha, rm.mu) == (0.5, 1.0)


@pytest.mark.parametrize(
    ("arm", "conf", "offloaded", "early", "cost"),
    [
        (0, 0.7, False, True, 0.3),  # exits at block 3
        (0, 0.3, True, False, 0.8),  # offloads from block 3
        (2, 0.5, False, True, 0.9),  # alpha is inclusive
        (6, 0.1, False, False, 1.9),  # last arm: whole network on the device, never offloads
    ],
)
def test_outcome_table(arm: int, conf: float, offloaded: bool, early: bool, cost: float) -> None:
    out = RewardModel(paper_cost(BLOCKS)).outcome(arm, conf)
    assert (out.offloaded, out.exited_early) == (offloaded, early)
    assert out.cost == pytest.approx(cost)


def test_measured_cost_follows_flops_and_payload() -> None:
    prof = profile_model(MultiExitMobileNetV2(num_classes=10), 224)
    cost = measured_cost(prof, BLOCKS, edge_gmacs_per_s=2.0, link_mbit_per_s=10.0, rtt_ms=20.0)
    assert cost.full_cost == pytest.approx(1.9)  # same units as the paper model
    unit = 1.9 / (prof.macs_to_split(19) / 2e9)
    assert cost.edge[0] == pytest.approx(prof.macs_to_exit(3) / 2e9 * unit)  # one head so far
    # block 3 sends 24x56x56 fp16 values, block 15 160x7x7: the early split costs more to send
    send3 = ((24 * 56 * 56 * 2 + HEADER_BYTES) * 8 / 10e6 + 0.02) * unit
    assert cost.offload[0] == pytest.approx(send3)
    assert cost.offload[0] > 4 * cost.offload[4] - 0.02 * unit * 4
    assert list(cost.edge) == sorted(cost.edge)
    faster = measured_cost(prof, BLOCKS, link_mbit_per_s=100.0)
    assert faster.offload[0] < cost.offload[0]
    # One encoding per split, as a node on encoding "auto" sends: int4 halves int8's bytes.
    mixed = measured_cost(prof, BLOCKS, encoding={3: "int4", 6: "int8"})
    assert mixed.offload[0] == pytest.approx(
        ((24 * 56 * 56 // 2 + HEADER_BYTES) * 8 / 10e6 + 0.02) * unit
    )
    assert mixed.offload[1] == measured_cost(prof, BLOCKS, encoding="int8").offload[1]
    assert mixed.offload[2:] == cost.offload[2:]  # splits it does not name: fp16


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"link_mbit_per_s": 0}, "link_mbit_per_s should be positive, got 0"),
        ({"edge_gmacs_per_s": -1}, "edge_gmacs_per_s should be positive, got -1"),
        ({"rtt_ms": -5}, "rtt_ms should be >= 0, got -5"),
        ({"encoding": "bf8"}, "encoding should be one of"),
    ],
)
def test_measured_cost_rejects_bad_settings(kwargs: dict, match: str) -> None:
    prof = profile_model(MultiExitMobileNetV2(num_classes=10, width_mult=0.35), 32)
    with pytest.raises(ValueError, match=match):
        measured_cost(prof, BLOCKS, **kwargs)


def test_reward_model_rejects_bad_settings() -> None:
    with pytest.raises(ValueError, match=r"alpha should be in \[0, 1\], got 1.5"):
        RewardModel(paper_cost(BLOCKS), alpha=1.5)
    with pytest.raises(ValueError, match="mu should be >= 0"):
        RewardModel(paper_cost(BLOCKS), mu=-1)
    with pytest.raises(ValueError, match="last arm should be block 19"):
        paper_cost((3, 6))
    with pytest.raises(ValueError, match=r"costs should be finite and >= 0"):
        paper_cost(BLOCKS, offload=float("inf"))
    with pytest.raises(ValueError, match="mu should be >= 0, got nan"):
        RewardModel(paper_cost(BLOCKS), mu=float("nan"))


def test_measured_cost_charges_every_exit_head_on_the_way() -> None:
    """Issue 10, section 4: the device computes every exit up to its split (side observations
    need them), so a split at block 12 pays the heads at 3, 6, 9 and 12, not only its own."""
    prof = profile_model(MultiExitMobileNetV2(num_classes=10), 224)
    cost = measured_cost(prof, BLOCKS, edge_gmacs_per_s=2.0)
    heads = sum(prof.exit_macs[b] for b in (3, 6, 9, 12))
    assert prof.macs_to_split(12) == prof.block(12).cumulative_macs + heads
    assert prof.macs_to_split(12) > prof.macs_to_exit(12)
    unit = 1.9 / (prof.macs_to_split(19) / 2e9)
    for i, b in enumerate(BLOCKS):
        assert cost.edge[i] == pytest.approx(prof.macs_to_split(b) / 2e9 * unit)
    # the last arm pays every head too, and still costs the paper's gamma * 19
    assert prof.macs_to_split(19) == prof.block(19).cumulative_macs + sum(prof.exit_macs.values())
    assert cost.edge[-1] == pytest.approx(1.9)


def test_reward_bounds_span_every_outcome() -> None:
    rm = RewardModel(paper_cost(BLOCKS))
    assert rm.arm_bounds(0) == pytest.approx((-0.8, 0.7))  # offload with C_L 0, exit with 1
    assert rm.arm_bounds(6) == pytest.approx((-1.9, -0.9))
    assert rm.reward_bounds == pytest.approx((-2.3, 0.7))  # block 18 offloading: -1.8 - 0.5
    assert rm.reward_range == pytest.approx(3.0)
    assert rm.offload_cost(6) == 0.0 and rm.offload_cost(0) == 0.5
    nothing_offloads = RewardModel(paper_cost(BLOCKS), alpha=0.0)
    assert nothing_offloads.arm_bounds(0) == pytest.approx((-0.3, 0.7))


def test_timed_edge_costs_come_from_this_machine() -> None:
    from shared.profile import measure_exit_latency

    model = MultiExitMobileNetV2(num_classes=10, width_mult=0.35)
    seconds = measure_exit_latency(model, 32, repeats=3, warmup=1)
    assert sorted(seconds) == list(BLOCKS)
    # every arm's path contains the shallower backbone, so time grows with depth (heads aside)
    assert all(t > 0 for t in seconds.values())
    assert seconds[19] > seconds[3]
    prof = profile_model(model, 32)
    cost = measured_cost(prof, BLOCKS, edge_seconds=seconds)
    assert cost.name == "measured-timed"
    assert cost.full_cost == pytest.approx(1.9)
    assert cost.edge[0] == pytest.approx(1.9 * seconds[3] / seconds[19])
    with pytest.raises(ValueError, match=r"edge_seconds should give a positive time .*\[6\]"):
        measured_cost(prof, BLOCKS, edge_seconds={b: 1.0 for b in BLOCKS if b != 6})
