"""The exits after the split, told by the cloud: a node on the frame arm learns its exits (and
whether to trust them) from the worker's replies instead of running them itself.

The node is driven directly on the real tiny artefact; each offload is answered by the
worker's own engine (:class:`cloud_worker.engine.ModelBank`) from the real msgpack message."""

from __future__ import annotations

import time

import cv2
import numpy as np
from sklearn.datasets import load_digits

from cloud_worker.engine import ModelBank
from device.backend import make_backend
from device.costs import LiveCosts
from device.node import Node, node_arms
from shared.cost import RewardModel
from shared.model_file import load_model
from shared.mqtt import Message
from shared.policy import build_policy
from shared.protocol import Reply, Topics, decode_activation, encode_reply

from .node_helpers import Recorder


class CountingEdge:
    """The node's edge backend, counting the frames it ran blocks for."""

    def __init__(self, edge) -> None:
        self.edge, self.runs = edge, 0

    def __call__(self, x, block):
        self.runs += 1
        return self.edge(x, block)


def _node(path, tmp_path) -> tuple[Node, CountingEdge, Recorder]:
    model = load_model(path)
    arms = node_arms(model.meta.arm_blocks, frame_offload=True)
    # A Pi 4 on a LAN, as the testbed measured it: the whole network 72 ms, the frame's JPEG
    # 3 ms and 6 kB, block 3's activation 26 kB, a deep one 1.2 kB, a 30 ms round trip.
    costs = LiveCosts(
        arms,
        {b: 0.003 if b == 0 else 0.072 * b / 19 for b in arms},
        {b: 6_000 if b == 0 else max(1_200, 26_000 * 3 // b) for b in arms},
        link_mbit_per_s=100,
        rtt_ms=30,
    )
    rewards = RewardModel(costs.cost_model(), alpha=0.8)
    out, edge = Recorder(), CountingEdge(make_backend("auto", model, tmp_path, 1))
    node = Node(
        checkpoint=model,
        policy=build_policy("isplitee", rewards),
        costs=costs,
        rewards=rewards,
        publisher=out,
        topics=Topics(),
        device_id="cam",
        edge=edge,
        frame_offload=True,
    )
    return node, edge, out


def _serve(bank: ModelBank, payload: bytes, *, exits: bool) -> Reply:
    act = decode_activation(payload)
    model_hash, block = bank.check(act)
    answers = bank.run(model_hash, block, [bank.inputs(act)])
    return Reply(
        frame_id=act.frame_id,
        worker_id="w",
        label=int(answers.labels[0]),
        confidence=float(answers.confidences[0]),
        exits=answers.exits[0] if exits else (),
    )


def _frame(digit: np.ndarray) -> np.ndarray:
    """One of scikit-learn's 8 x 8 digits as a 32 px camera frame."""
    pixels = (digit * 255 / 16).astype(np.uint8)
    image = cv2.resize(pixels, (32, 32), interpolation=cv2.INTER_LINEAR)
    return np.repeat(image[:, :, None], 3, axis=2)


def _run(path, tmp_path, frames: int, *, exits: bool) -> tuple[int, Node]:
    """``frames`` digits through a node on the frame arm, each offload answered by the worker's
    engine (``exits``: with the exits after the split, as a worker of this release sends)."""
    node, edge, out = _node(path, tmp_path)
    bank = ModelBank([path], threads=1)
    digits = load_digits().images
    for i in range(frames):
        before = len(out.sent)
        node.process(i, _frame(digits[i % len(digits)]), time.time())
        for topic, payload, corr in out.sent[before:]:
            if topic.endswith("/activation"):
                reply = encode_reply(_serve(bank, payload, exits=exits))
                node.on_reply(Message("r", reply, correlation=corr))
    assert node.counters.results == frames
    return edge.runs, node


def test_a_node_on_the_frame_arm_learns_every_exit_from_the_replies(tiny_artefact, tmp_path):
    runs, node = _run(tiny_artefact, tmp_path, 120, exits=True)
    assert runs == 0  # the node never ran a block: every frame went as a JPEG
    arms = node.policy.arm_stats()
    assert all(arm["count"] == 120 for arm in arms)  # yet every exit was learnt
    assert all(arm["exit_rate"] is not None for arm in arms[1:-1])


def test_without_the_exits_a_node_on_the_frame_arm_learns_only_the_final_answer(
    tiny_artefact, tmp_path
):
    """What a worker of an earlier release (no ``exits`` in its replies) leaves a node with."""
    _, node = _run(tiny_artefact, tmp_path, 40, exits=False)
    arms = node.policy.arm_stats()
    assert [arm["count"] for arm in arms[1:-1]] == [0.0] * (len(arms) - 2)
    assert arms[0]["count"] == arms[-1]["count"] == 40
