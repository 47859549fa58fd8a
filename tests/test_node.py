"""The node driven without a broker or a trained model: a fake edge half, publishes recorded.

What is checked here is how the node's threads meet: a reply is matched and settled while the
next frame's edge half runs (the reply thread never waits for inference), and runtime settings
go through one table that covers every settable key."""

from __future__ import annotations

import threading
import time
from types import SimpleNamespace

import numpy as np
import pytest

from device.costs import LiveCosts
from device.node import SETTERS, Node
from device.settings import SETTABLE, Setting, SettingError
from shared.cost import RewardModel, paper_cost
from shared.meta import ModelMeta
from shared.mqtt import Message
from shared.policy import Policy, build_policy
from shared.protocol import Reply, Topics, encode_reply

from .node_helpers import Recorder

META = ModelMeta(num_classes=2, input_size=16, class_names=("no", "yes"), exit_blocks=(3,))
UNSURE = np.array([[0.0, 0.0]], np.float32)  # confidence 0.5: below alpha 1, offloaded


class GatedEdge:
    """An edge half that, once ``gate`` is armed, waits for it on its next run."""

    def __init__(self) -> None:
        self.entered = threading.Event()
        self.gate: threading.Event | None = None

    def __call__(self, x: np.ndarray, block: int) -> tuple[np.ndarray, list[np.ndarray]]:
        if self.gate is not None:
            self.entered.set()
            assert self.gate.wait(10)
        exits = [UNSURE] * (1 if block == 3 else 2)
        return np.zeros((1, 4, 2, 2), np.float32), exits


def _node(
    spec: str = "fixed:3", alpha: float = 1.0, costs: LiveCosts | None = None
) -> tuple[Node, Recorder, GatedEdge]:
    rewards = RewardModel(paper_cost(META.arm_blocks), alpha=alpha)
    out, edge = Recorder(), GatedEdge()
    node = Node(
        checkpoint=SimpleNamespace(meta=META, hash="0" * 64),  # type: ignore[arg-type]
        policy=build_policy(spec, rewards),
        costs=costs,
        rewards=rewards,
        publisher=out,
        topics=Topics(),
        device_id="cam",
        make_policy=build_policy,
        edge=edge,
    )
    return node, out, edge


def _frame() -> np.ndarray:
    return np.zeros((16, 16, 3), np.uint8)


def _reply(frame_id: int, corr: bytes | None) -> Message:
    reply = Reply(frame_id=frame_id, worker_id="w", label=1, confidence=0.9)
    return Message("r", encode_reply(reply), correlation=corr)


def test_a_reply_is_settled_while_the_next_frame_runs_its_edge_half() -> None:
    node, out, edge = _node()
    node.process(0, _frame(), time.time())
    (corr,) = out.offloads()
    edge.gate = threading.Event()
    frame = threading.Thread(target=node.process, args=(1, _frame(), time.time()))
    frame.start()
    try:
        assert edge.entered.wait(5)  # frame 1 is inside its edge half now
        reply = threading.Thread(target=node.on_reply, args=(_reply(0, corr),))
        reply.start()
        reply.join(2.0)
        assert not reply.is_alive(), "the reply waited for the edge half"
        assert [(r.frame_id, r.source) for r in out.results()] == [(0, "cloud")]
        assert node.counters.cloud == 1 and node.pending == 0
    finally:
        edge.gate.set()
        frame.join(5)
    assert node.pending == 1  # frame 1 offloaded in its turn


def test_a_duplicate_reply_is_counted_late_and_publishes_nothing() -> None:
    node, out, _ = _node()
    node.process(0, _frame(), time.time())
    (corr,) = out.offloads()
    node.on_reply(_reply(0, corr))
    node.on_reply(_reply(0, corr))  # QoS 1 may deliver twice
    assert [(r.frame_id, r.source) for r in out.results()] == [(0, "cloud")]
    assert node.counters.late_replies == 1


def test_an_unanswered_offload_goes_again_once_then_falls_back_on_its_exit() -> None:
    node, out, _ = _node()  # reoffloads 1, reply timeout 2 s
    node.process(0, _frame(), time.time())
    start = time.monotonic()
    assert node.expire(start + 2.5) == 0 and len(out.offloads()) == 2  # sent again
    assert node.counters.reoffloads == 1 and node.pending == 1
    assert node.expire(start + 5.0) == 1
    assert [(r.frame_id, r.source, r.split_block) for r in out.results()] == [(0, "fallback", 3)]
    assert node.pending == 0 and node.counters.errors["timeout"] == 1


def test_what_a_frame_waits_beyond_its_timed_parts_prices_the_arm_that_decided_it() -> None:
    """Read 50 ms before the node took it (a frame behind the node's own work): the edge run
    and the round trip are timed, the 50 ms are the arm's wait (device/costs.py)."""
    costs = LiveCosts(
        META.arm_blocks, {3: 0.001, 19: 0.002}, {3: 100, 19: 10}, link_mbit_per_s=10, rtt_ms=1
    )
    node, out, _ = _node(alpha=0.0, costs=costs)
    node.process(0, _frame(), time.time() - 0.050)  # answers at its exit
    assert 0.050 <= costs.wait_seconds(0) < 0.090
    node.apply(Setting("alpha", 1.0))  # unsure from now on: offloaded
    node.process(1, _frame(), time.time() - 0.020)
    (corr,) = out.offloads()
    time.sleep(0.030)  # the round trip: timed, not a wait
    node.on_reply(_reply(1, corr))
    assert 0.020 * 0.2 + 0.050 * 0.8 <= costs.wait_seconds(0) < 0.060
    assert costs.cost_model().edge[0] > 0.19 + 0.040 / 0.002 * 1.9  # block 3 and its wait
    assert costs.wait_seconds(1) == costs.wait_seconds(0)  # not played: the least measured


def test_every_settable_key_has_one_handler() -> None:
    assert set(SETTERS) == set(SETTABLE)


def test_settings_are_applied_through_the_table() -> None:
    node, _, _ = _node(spec="isplitee", alpha=0.8)
    first: Policy = node.policy
    assert node.apply(Setting("mu", 2.0))["mu"] == 2.0 and node.policy is first  # kept
    assert node.apply(Setting("encoding", "int8"))["wire"] == {"3": "int8"}
    assert node.apply(Setting("alpha", 0.5))["alpha"] == 0.5 and node.policy is not first
    assert node.policy.to_state()["alpha"] == 0.5
    second = node.policy
    assert node.apply(Setting("reset", True))["policy"] == "isplitee"
    assert node.policy is not second
    assert node.apply(Setting("policy", "fixed:3"))["policy"] == "fixed:3"
    snapshot = node.policy_snapshot()
    assert snapshot.spec == "fixed:3" and snapshot.settings == node.settings()
    assert snapshot.state["policy"] == node.policy.to_state()["policy"]
    with pytest.raises(SettingError, match="unknown setting 'gain'"):
        node.apply(Setting("gain", 1.0))
