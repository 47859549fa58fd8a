"""The exits after the split in a reply: on the wire, from the worker's engine, and in the
policy, which learns an audit that carries them as a sample of the whole network."""

from __future__ import annotations

import msgpack
import numpy as np
import pytest

from cloud_worker.engine import ModelBank
from shared.cost import CostModel, Observation, RewardModel
from shared.inference import confidence
from shared.model_file import load_model
from shared.policy import BanditError, build_policy
from shared.protocol import (
    ExitAnswer,
    ProtocolError,
    Reply,
    decode_reply,
    encode_reply,
)

BLOCKS = (0, 3, 6, 9, 12, 15, 18, 19)  # the frame arm first


def test_a_reply_carries_the_exits_and_one_from_an_earlier_release_none() -> None:
    exits = (ExitAnswer(6, 2, 0.5), ExitAnswer(9, 3, 0.75))
    reply = Reply(frame_id=7, worker_id="w", label=3, confidence=0.9, exits=exits)
    assert decode_reply(encode_reply(reply)) == reply
    plain = Reply(frame_id=7, worker_id="w", label=3, confidence=0.9)
    assert "exits" not in msgpack.unpackb(encode_reply(plain))  # nothing more on the wire
    assert decode_reply(encode_reply(plain)).exits == ()


@pytest.mark.parametrize(
    "exits",
    [
        "no",
        [[3, 1]],
        [[3, 1, 1.5]],
        [[3, -1, 0.5]],
        [[19, 1, 0.5]],
        [[6, 1, 0.5], [3, 1, 0.5]],
        [[3, 1, True]],
        [[3, 1, float("nan")]],
        [[3, 1, 0.5]] * 20,
    ],
)
def test_a_malformed_exits_list_is_a_decode_error(exits) -> None:
    body = {"v": 1, "frame_id": 1, "worker_id": "w", "label": 1, "confidence": 0.5}
    body.update(cloud_ms=1.0, exits=exits)
    with pytest.raises(ProtocolError) as err:
        decode_reply(msgpack.packb(body))
    assert err.value.kind == "decode"


def test_the_worker_tells_the_exits_the_whole_network_gives(tiny_artefact) -> None:
    model = load_model(tiny_artefact)
    meta = model.meta
    bank = ModelBank([tiny_artefact], threads=1)
    x = np.random.default_rng(0).standard_normal((3, 3, 32, 32)).astype(np.float32)
    chain = model.open_chain(1)
    _, logits = chain.edge(x, meta.arm_blocks[-1])  # every exit, on the device's side
    temps = meta.arm_temperatures()
    for block in (0, meta.arm_blocks[1]):
        inputs = x if block == 0 else chain.edge(x, block)[0]
        answers = bank.run(model.hash, block, list(inputs[:, None]))
        after = [i for i, b in enumerate(meta.arm_blocks[:-1]) if b > block]
        for n in range(3):
            assert [e.block for e in answers.exits[n]] == [meta.arm_blocks[i] for i in after]
            for e, i in zip(answers.exits[n], after, strict=True):
                conf, label = confidence(logits[i][n : n + 1], temps[i])
                assert e.label == int(label[0]) and e.confidence == pytest.approx(conf[0], 1e-4)


def _rewards() -> RewardModel:
    edge = (0.05, 0.2, 0.35, 0.6, 0.85, 1.1, 1.4, 1.9)
    offload = (0.1, 0.9, 0.7, 0.5, 0.4, 0.35, 0.3, 0.0)  # the frame: cheapest
    return RewardModel(CostModel("measured", BLOCKS, edge, offload), alpha=0.8)


def _whole(label: int = 4) -> Observation:
    """A frame-arm audit whose reply told every exit: all confident and agreeing."""
    confs = (0.0, 0.95, 0.96, 0.97, 0.98, 0.99, 0.99, 0.99)
    return Observation(confs, 0.99, audit=True, classes=(0, *[label] * 7), final_class=label)


def test_an_audit_with_every_exit_teaches_every_arm_and_the_referee() -> None:
    p = build_policy("isplitee", _rewards())
    whole, frames = _whole(), 0
    for _ in range(400):
        d = p.decide()
        if d.arm == 0 or d.audit:  # the frame, or an audit: the reply tells every exit
            frames += d.arm == 0
            p.observe(d, whole)
        else:  # a trusted exit answered on the device
            conf, classes = whole.confidences[: d.arm + 1], whole.classes[: d.arm + 1]
            p.observe(d, Observation(conf, None, classes=classes))
    assert frames >= 50
    arms = p.arm_stats()
    assert all(a["count"] >= frames for a in arms)  # every frame taught every arm
    assert all(a["exit_rate"] == 1.0 and a["agreement"] == 1.0 for a in arms[1:-1])
    assert arms[1]["trusted"]


def test_without_the_exits_the_frame_arm_teaches_the_final_answer_alone() -> None:
    p = build_policy("isplitee", _rewards())
    for _ in range(50):
        d = p.decide()
        p.observe(d, Observation((0.0,), 0.99, audit=True, classes=(0,), final_class=4))
    arms = p.arm_stats()
    assert [a["count"] for a in arms[1:-1]] == [0.0] * 6 and not arms[1]["trusted"]


def test_every_exit_is_a_whole_network_sample_only_for_an_audit() -> None:
    p = build_policy("isplitee", _rewards())
    d = p.decide()
    whole = _whole()
    for bad, match in [
        (Observation(whole.confidences, 0.99, classes=whole.classes, final_class=4), "audit"),
        (Observation(whole.confidences, 0.5, audit=True), "last exit"),
        (Observation(whole.confidences, 0.99, audit=True, classes=(0, 4)), "classes"),
        (
            Observation(whole.confidences, 0.99, audit=True, classes=whole.classes, final_class=5),
            "final_class",
        ),
    ]:
        with pytest.raises(BanditError, match=match):
            p.observe(d, bad)
    p.observe(d, whole)  # still open after every refusal
