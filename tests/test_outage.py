"""A link outage seen by the node: offloads that get no reply in time price every offload at
the wait, so the policy answers on the node, and the first answer to come back ends that.

The node is driven directly (device/node.py is written to be), on the real tiny artefact, with
real msgpack replies; what it publishes is recorded instead of sent."""

from __future__ import annotations

import time

import numpy as np

from device.backend import make_backend
from device.costs import LiveCosts
from device.node import Node, node_arms
from shared.cost import RewardModel
from shared.model_file import load_model
from shared.mqtt import Message
from shared.policy import build_policy
from shared.protocol import Reply, Topics, encode_reply

from .node_helpers import Recorder


def _node(model_path, tmp_path, spec: str, alpha: float) -> tuple[Node, LiveCosts, Recorder]:
    model = load_model(model_path)
    meta = model.meta
    arms = node_arms(meta.arm_blocks, frame_offload=False)
    # A slow device on a fast link: the whole network takes 1 s, an offload 10 ms.
    costs = LiveCosts(
        arms,
        {b: b / 19 for b in arms},
        {b: 1_000 for b in arms},
        link_mbit_per_s=100,
        rtt_ms=10,
        late_s=0.5,
    )
    rewards = RewardModel(costs.cost_model(), alpha=alpha)
    out = Recorder()
    node = Node(
        checkpoint=model,
        policy=build_policy(spec, rewards),
        costs=costs,
        rewards=rewards,
        publisher=out,
        topics=Topics(),
        device_id="cam",
        reply_timeout_s=0.5,
        reoffloads=0,
        edge=make_backend("auto", model, tmp_path, 1),
    )
    return node, costs, out


def _frames(n: int) -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    return [rng.integers(0, 255, (32, 32, 3), dtype=np.uint8) for _ in range(n)]


def test_no_reply_in_time_turns_the_node_to_its_own_answers_until_one_comes(
    tiny_artefact, tmp_path
) -> None:
    node, costs, out = _node(tiny_artefact, tmp_path, "fixed:3", alpha=1.0)  # never confident
    node.process(0, _frames(1)[0], time.time())
    ((topic, _, corr),) = out.sent
    assert topic.endswith("/activation") and not costs.outage
    assert node.expire(time.monotonic() + 1.0) == 1  # no reply: it fell back
    assert costs.outage
    model = node.rewards.cost
    assert model.edge[0] + model.offload[0] > model.edge[-1]  # local beats any offload now
    late = Reply(frame_id=0, worker_id="w", label=1, confidence=0.9)
    node.on_reply(Message("r", encode_reply(late), correlation=corr))
    assert node.counters.late_replies == 1 and not costs.outage  # the link delivers again
    model = node.rewards.cost
    assert model.edge[0] + model.offload[0] < model.edge[-1]


def _run(node: Node, out: Recorder, ids: range, *, answer: bool) -> int:
    """Frames ``ids`` through the node; ``answer``: the link replies to each offload at once.
    Returns how many it offloaded."""
    sent = 0
    for i in ids:
        before = len(out.sent)
        node.process(i, _frames(1)[0], time.time())
        for topic, _, corr in out.sent[before:]:
            if topic.endswith("/activation"):
                sent += 1
                if answer:
                    reply = Reply(frame_id=i, worker_id="w", label=1, confidence=0.9)
                    node.on_reply(Message("r", encode_reply(reply), correlation=corr))
    return sent


def test_the_learning_policy_answers_on_the_node_through_an_outage_and_offloads_after(
    tiny_artefact, tmp_path
) -> None:
    node, costs, out = _node(tiny_artefact, tmp_path, "isplitee", alpha=1.0)
    assert _run(node, out, range(0, 30), answer=True) >= 15  # offloading pays on this link
    i = 30
    while not node.pending:  # the next offload goes unanswered: the link is down
        _run(node, out, range(i, i + 1), answer=False)
        i += 1
    node.expire(time.monotonic() + 1.0)
    assert costs.outage
    assert _run(node, out, range(i, i + 20), answer=False) == 0  # all answered on the node
    unanswered = out.offloads()[-1]
    late = Reply(frame_id=i - 1, worker_id="w", label=1, confidence=0.9)  # delivered at last
    node.on_reply(Message("r", encode_reply(late), correlation=unanswered))
    assert not costs.outage
    assert _run(node, out, range(i + 20, i + 40), answer=True) >= 5  # offloads again


def test_a_round_trip_ends_when_the_reply_arrives_not_when_a_busy_node_gets_to_it(
    tiny_artefact, tmp_path
) -> None:
    """A probe back after 20 ms, left 0.3 s in the inbox while the node was busy: the link is
    priced at the 20 ms, not at the node's own wait."""
    node, costs, out = _node(tiny_artefact, tmp_path, "isplitee", alpha=0.8)
    arm = 1
    node.probe(arm, 1_000)
    topic, payload, corr = out.sent[-1]
    echo = Message(topic, payload, correlation=corr, received=time.monotonic() + 0.02)
    time.sleep(0.3)  # the reply thread gets to it only now
    node.on_reply(echo)
    assert 0.0 < costs.offload_seconds(arm) < 0.1


def test_an_offload_that_shared_the_link_with_a_probe_does_not_price_its_arm(
    tiny_artefact, tmp_path
) -> None:
    """On a slow uplink a frame sent while a big probe is on the link waits behind it: that
    round trip says what probing costs, not what offloading from the arm does, so it is left
    out; the next one, alone on the link, is blended in."""
    node, costs, out = _node(tiny_artefact, tmp_path, "fixed:3", alpha=1.0)  # always offloads
    prior = costs.offload_seconds(0)
    node.probe(1, 100_000)  # another arm's probe, still on the link
    node.process(0, _frames(1)[0], time.time())
    time.sleep(0.3)  # the frame waited behind the probe
    reply = Reply(frame_id=0, worker_id="w", label=1, confidence=0.9)
    node.on_reply(Message("r", encode_reply(reply), correlation=out.offloads()[-1]))
    assert costs.offload_seconds(0) == prior
    probe = next(s for s in out.sent if s[0].endswith("/probe"))
    node.on_reply(Message(probe[0], probe[1], correlation=probe[2]))  # the probe is back
    node.process(1, _frames(1)[0], time.time())
    reply = Reply(frame_id=1, worker_id="w", label=1, confidence=0.9)
    node.on_reply(Message("r", encode_reply(reply), correlation=out.offloads()[-1]))
    assert costs.offload_seconds(0) < 0.1  # alone on the link, answered at once
