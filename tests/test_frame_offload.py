"""Frame offload: the frame itself as a JPEG, split block 0 (docs/protocol.md, "Frame offload").

Unit tests of the JPEG codec, the message and the costs; then a worker and a node on a real
Mosquitto, with real models.
"""

from __future__ import annotations

import re
import threading
import time

import numpy as np
import pytest
import torch

from device.costs import LiveCosts
from device.node import node_arms
from shared.checkpoint import load_checkpoint
from shared.config import load_config
from shared.cost import CostModel, Observation, RewardModel, paper_cost
from shared.jpeg import JpegError, decode_frame, encode_frame, jpeg_dimensions
from shared.mqtt import MqttLink
from shared.policy import build_policy, policy_from_state, with_first_arm
from shared.preprocess import FramePreprocessor
from shared.protocol import (
    FRAME_BLOCK,
    ProtocolError,
    Topics,
    decode_activation,
    decode_reply,
    encode_frame_activation,
)

from .pipeline_helpers import WorkerPool, activation, send_activation

T = Topics()
HASH = "ab" * 32


def _photo(h: int = 48, w: int = 64) -> np.ndarray:
    """A smooth RGB image with some texture (JPEG-friendly, like a camera's)."""
    y, x = np.mgrid[0:h, 0:w]
    rng = np.random.default_rng(1)
    img = np.stack([x * 255 / w, y * 255 / h, (x + y) * 127 / (w + h)], axis=2)
    return np.clip(img + rng.normal(0, 4, img.shape), 0, 255).astype(np.uint8)


def _frame_message(jpeg: bytes, shape, **over) -> bytes:
    fields = dict(device_id="cam", frame_id=3, captured_at=1.0, model_hash=HASH)
    return encode_frame_activation(jpeg=jpeg, shape=shape, **{**fields, **over})


# -- the codec and the message ---------------------------------------------------------------------
def test_a_frame_survives_its_jpeg_and_its_header_says_its_size() -> None:
    img = _photo()
    data = encode_frame(img, 90)
    assert jpeg_dimensions(data) == (48, 64, 3)
    back = decode_frame(data, (48, 64, 3))
    psnr = 10 * np.log10(255**2 / np.mean((back.astype(float) - img) ** 2))
    assert psnr > 30, psnr  # RGB order kept: a swapped channel would be far below this
    assert len(encode_frame(img, 30)) < len(data)  # quality is honoured


def test_the_message_decodes_as_a_frame_offload_and_refuses_what_does_not_fit() -> None:
    img = _photo()
    data = encode_frame(img)
    act = decode_activation(_frame_message(data, img.shape, exit_confidence=0.3, exit_class=2))
    assert act.is_frame and act.split_block == FRAME_BLOCK == 0 and act.shape == (48, 64, 3)
    assert (act.exit_confidence, act.exit_class) == (0.3, 2)
    with pytest.raises(ValueError, match="JPEG"):
        act.array()
    bad = {
        "declares [48, 64, 3], the message says [48, 65, 3]": _frame_message(data, (48, 65, 3)),
        "at most 2048": _frame_message(data, (3000, 64, 3)),
        "does not start with the FF D8": _frame_message(b"\x89PNG" + data, (48, 64, 3)),
        "no start-of-frame": _frame_message(data[:20], (48, 64, 3)),
        # a split's tensor claiming block 0, and a JPEG claiming a split
        "a frame offload has split_block 0": activation(
            np.zeros((4, 2, 2), np.float32), model_hash=HASH, device_id="c", frame_id=1,
            split_block=0,
        ),
    }  # fmt: skip
    for why, payload in bad.items():
        with pytest.raises(ProtocolError, match=re.escape(why)) as info:
            decode_activation(payload)
        assert info.value.kind == "decode"


def test_a_small_jpeg_declaring_a_huge_image_is_refused_before_it_is_decoded() -> None:
    """A decompression bomb: 60000 x 60000 declared in a few hundred bytes. The header is read,
    the image never decoded."""
    data = bytearray(encode_frame(_photo(16, 16)))
    i = next(i for i in range(2, len(data)) if data[i] == 0xFF and data[i + 1] in (0xC0, 0xC2))
    data[i + 5 : i + 9] = (60000).to_bytes(2, "big") * 2
    assert jpeg_dimensions(bytes(data))[:2] == (60000, 60000)
    with pytest.raises(ProtocolError, match="at most 2048"):
        decode_activation(_frame_message(bytes(data), (60000, 60000, 3)))
    with pytest.raises(ProtocolError, match="declares"):
        decode_activation(_frame_message(bytes(data), (16, 16, 3)))
    with pytest.raises(JpegError, match="does not decode"):
        decode_frame(_header_only(encode_frame(_photo(16, 16))), (16, 16, 3))


def _header_only(jpeg: bytes) -> bytes:
    """A JPEG cut after its start-of-frame header: its size reads, its image does not decode."""
    i = next(i for i in range(2, len(jpeg)) if jpeg[i] == 0xFF and jpeg[i + 1] == 0xC0)
    return jpeg[: i + 2 + int.from_bytes(jpeg[i + 2 : i + 4], "big")] + b"\xff\xd9"


# -- costs and the policy --------------------------------------------------------------------------
def test_an_unsure_split_sends_the_frame_where_it_is_cheaper_and_is_priced_so() -> None:
    blocks = (0, 3, 9, 19)
    costs = LiveCosts(
        blocks,
        {0: 0.002, 3: 0.01, 9: 0.03, 19: 0.07},
        {0: 10_000, 3: 150_000, 9: 3_000, 19: 0},
        link_mbit_per_s=3.0,
        rtt_ms=40.0,
    )
    assert costs.frame_arm == 0
    assert costs.frame_cheaper(1) and not costs.frame_cheaper(2) and not costs.frame_cheaper(0)
    model = costs.cost_model()
    frame = costs.frame_seconds()
    unit = 1.9 / 0.07
    assert model.offload[1] == pytest.approx(frame * unit)  # block 3: the frame's price
    assert model.offload[2] == pytest.approx(costs.offload_seconds(2) * unit)  # its own
    without = LiveCosts(
        blocks[1:], {3: 0.01, 9: 0.03, 19: 0.07}, {3: 150_000, 9: 3_000, 19: 0},
        link_mbit_per_s=3.0, rtt_ms=40.0,
    )  # fmt: skip
    assert without.frame_arm is None and not without.frame_cheaper(0)
    assert without.cost_model().offload[0] > model.offload[1] * 4


def test_a_policy_learns_the_frame_arm_and_a_state_from_before_it_restores() -> None:
    """The frame arm is an exit that never answers: its observations are audits of C_L, which
    teach the last arm too. A state saved by a node without it restores with the arm added in
    front, every statistic kept."""
    old = build_policy("isplitee", RewardModel(paper_cost((3, 9, 19)), alpha=0.8))
    for _ in range(30):
        d = old.decide()
        conf = (0.9, 0.95, 0.99)[: d.arm + 1]
        revealed = d.arm == 2 or d.audit or conf[-1] < 0.8
        old.observe(
            d,
            Observation(
                conf,
                0.99 if revealed else None,
                audit=d.audit and d.arm != 2,
                classes=tuple(1 for _ in conf),
                final_class=1 if revealed else None,
            ),
        )
    widened = node_arms((3, 9, 19), frame_offload=True)
    assert widened == (0, 3, 9, 19) and node_arms((3, 19), frame_offload=False) == (3, 19)
    cost = CostModel("t", widened, (0.01, 0.3, 0.9, 1.9), (0.4, 0.5, 0.5, 0.5))
    new = policy_from_state(with_first_arm(old.to_state()), RewardModel(cost, alpha=0.8))
    assert new.rounds == old.rounds and new.n_arms == 4
    before, after = old.arm_stats(), new.arm_stats()
    assert after[0]["count"] == 0 and after[0]["block"] == 0
    assert [a["count"] for a in after[1:]] == [b["count"] for b in before]
    assert [a["agreement"] for a in after[1:]] == [b["agreement"] for b in before]
    assert new.estimates()[1:] == pytest.approx(old.estimates(), abs=0.2)  # priced anew
    fixed = policy_from_state(
        with_first_arm(build_policy("fixed:9", RewardModel(paper_cost((3, 9, 19)))).to_state()),
        RewardModel(cost),
    )
    assert fixed.spec == "fixed:9"  # the same split, now arm 2
    frame = build_policy("fixed:0", RewardModel(cost, alpha=0.8))
    d = frame.decide()
    frame.observe(d, Observation((0.0,), 0.97, audit=True, classes=(0,), final_class=1))
    stats = frame.arm_stats()
    assert stats[0]["final_confidence_when_unsure"] == pytest.approx(0.97)
    assert stats[-1]["count"] == 1  # C_L revealed whatever the exits say: the last arm learns


def test_the_change_detector_watches_the_first_real_exit_not_the_frame_arm() -> None:
    """With the frame arm in front, the referee's free change detector reads exit 1 (the
    model's first exit): the frame arm's 0 would never move."""
    cost = CostModel("t", (0, 3, 19), (0.01, 0.5, 1.9), (1.5, 0.5, 0.5))  # frames dear
    policy = build_policy("isplitee", RewardModel(cost, alpha=0.8))
    for i in range(400):
        d = policy.decide()
        c = 0.99 if i < 200 else 0.1  # the scene changes at frame 200: exit 3 turns unsure
        conf = (0.0, c, 0.99)[: d.arm + 1]
        final = 0.99 if d.arm == 2 or d.audit or d.arm == 0 or conf[-1] < 0.8 else None
        policy.observe(
            d,
            Observation(
                conf,
                final,
                audit=(d.audit or d.arm == 0) and d.arm != 2,
                classes=tuple(1 for _ in conf),
                final_class=None if final is None else 1,
            ),
        )
    assert policy.to_state()["extra"]["referee"]["changes"] >= 1


# -- on the broker ---------------------------------------------------------------------------------
@pytest.fixture
def worker(broker, tiny_artefact):
    pool = WorkerPool(broker.url, [tiny_artefact])  # the artefact: no torch in the worker
    yield pool.start("wf")
    pool.close()


def test_the_worker_answers_a_frame_as_the_whole_network_on_the_nodes_input(
    broker, worker, tiny_checkpoint
) -> None:
    """A frame of any size: decoded, preprocessed as the node would, the whole network run;
    a corrupt JPEG behind a good header is answered with a decode error and counted."""
    ckpt = load_checkpoint(tiny_checkpoint)
    meta = ckpt.meta
    pre = FramePreprocessor(meta.input_size, meta.mean, meta.std)
    dev = MqttLink(broker.url, f"test-camf-{time.monotonic_ns()}", subscriptions=[T.reply("camf")])
    dev.start(10)
    try:
        frames = [_photo(48, 64), _photo(32, 32)[::-1].copy(), _photo(120, 90)]
        want = []
        for i, img in enumerate(frames):
            data = encode_frame(img)
            x = torch.from_numpy(pre(decode_frame(data, img.shape)))
            with torch.inference_mode():
                want.append(int(ckpt.model(x)[-1].argmax(1)))
            fields = dict(device_id="camf", frame_id=i, captured_at=time.time())
            payload = encode_frame_activation(
                jpeg=data, shape=img.shape, model_hash=ckpt.hash, **fields
            )
            send_activation(dev, "camf", i, payload)
        corrupt = _header_only(encode_frame(_photo(32, 32)))  # its header passes the decoder
        send_activation(
            dev,
            "camf",
            9,
            encode_frame_activation(
                jpeg=corrupt, shape=(32, 32, 3), model_hash=ckpt.hash,
                device_id="camf", frame_id=9, captured_at=time.time(),
            ),
        )  # fmt: skip
        replies = {}
        for _ in range(4):
            msg = dev.inbox.get(timeout=15)
            replies[int.from_bytes(msg.correlation, "big")] = decode_reply(msg.payload)
        assert [replies[i].label for i in range(3)] == want
        assert replies[9].error.kind == "decode" and "JPEG" in replies[9].error.message
        assert worker.metrics.error_counts == {"decode": 1}
    finally:
        dev.stop()


def _node(broker, model, source, device_id: str, **over):
    from device.app import DeviceApp
    from device.config import DeviceConfig

    flags = {
        "broker": broker.url,
        "model": str(model),
        "source": str(source),
        "device_id": device_id,
        "threads": 1,
        "reply_timeout_s": 1.0,
        **over,
    }
    return DeviceApp(load_config(DeviceConfig, None, flags))


def test_a_node_on_the_frame_arm_sends_jpegs_and_publishes_the_clouds_answers(
    broker, worker, tiny_artefact, tiny_checkpoint, tmp_path
) -> None:
    """``policy = fixed:0``: no block runs on the node; every frame goes as a JPEG at the model's
    input size, the worker answers it, and the result says split block 0."""
    from shared.lab.clips import whole_model_predictions, write_digit_clip

    from .pipeline_helpers import ResultReader

    clip = write_digit_clip(tmp_path / "clip.avi", 30, schedule=("clean",))
    whole = whole_model_predictions(load_checkpoint(tiny_checkpoint), clip.frames)
    wire = MqttLink(broker.url, f"wire-{time.monotonic_ns()}", subscriptions=["isplitee/camj/#"])
    wire.start(10)
    reader = ResultReader(broker.url, T.result("camj"))
    try:
        app = _node(broker, tiny_artefact, clip.path, "camj", policy="fixed:0", max_frames=30)
        assert app.arms[0] == FRAME_BLOCK
        summary = app.run(threading.Event())
        results = reader.collect(30)
    finally:
        reader.close()
    sent = []
    while not wire.inbox.empty():
        msg = wire.inbox.get()
        if msg.topic.endswith("/activation") and msg.payload:
            sent.append(decode_activation(msg.payload))
    wire.stop()
    assert (summary.frames, summary.cloud) == (30, 30)
    assert len(sent) == 30 and all(a.is_frame and a.shape == (32, 32, 3) for a in sent)
    assert {(r["split_block"], r["exit_block"], r["source"]) for r in results} == {(0, 19, "cloud")}
    agree = np.mean([r["label"] == whole[r["frame_id"]] for r in results])
    assert agree >= 0.9, agree  # a JPEG at quality 90 changes few of the whole network's labels
    stats = app.node.stats()
    assert stats["frame_offloads"] == 30
    assert sum(len(a.data) for a in sent) < stats["bytes_sent"] < 30 * 3 * 32 * 32  # JPEGs
    assert stats["arms"][0]["block"] == 0 and stats["arms"][0]["count"] == 30


def test_a_frame_the_cloud_never_answers_falls_back_on_the_first_exit(
    broker, tiny_artefact, tmp_path
) -> None:
    """No worker: the frame arm computed no exit, so the node runs its first exit when the
    reply times out; every frame still gets its one result."""
    from shared.lab.clips import write_digit_clip

    from .pipeline_helpers import ResultReader

    clip = write_digit_clip(tmp_path / "clip.avi", 6, schedule=("clean",))
    reader = ResultReader(broker.url, T.result("camx"))
    try:
        app = _node(
            broker, tiny_artefact, clip.path, "camx", policy="fixed:0", max_frames=6,
            reoffloads=0, reply_timeout_s=0.3,
        )  # fmt: skip
        app.run(threading.Event())
        results = reader.collect(6)
    finally:
        reader.close()
    first = app.ckpt.meta.exit_blocks[0]
    assert sorted(r["frame_id"] for r in results) == list(range(6))
    assert {(r["split_block"], r["exit_block"], r["source"]) for r in results} == {
        (0, first, "fallback")
    }
    assert all(0 < r["confidence"] <= 1 for r in results)


def test_the_frame_arm_never_counts_as_an_exit_even_at_alpha_0() -> None:
    """At alpha 0 every exit answers, but the frame arm has none: its frames are offloads,
    priced as such (counted as exits, they would look free)."""
    cost = CostModel("t", (0, 3, 19), (0.1, 0.5, 1.9), (5.0, 0.5, 0.5))
    policy = build_policy("fixed:0", RewardModel(cost, alpha=0.0))
    for _ in range(5):
        d = policy.decide()
        policy.observe(d, Observation((0.0,), 0.9, audit=True, classes=(0,), final_class=1))
    stats = policy.arm_stats()[0]
    assert stats["exit_rate"] == 0.0 and stats["censored_count"] == 5
    assert policy.estimates()[0] == pytest.approx(0.9 - 0.1 - 5.0)


def test_workers_that_refuse_frames_make_the_frame_arm_dear_and_stop_substitution() -> None:
    costs = LiveCosts(
        (0, 3, 19), {0: 0.001, 3: 0.01, 19: 0.07}, {0: 5_000, 3: 150_000, 19: 0},
        link_mbit_per_s=3.0, rtt_ms=40.0,
    )  # fmt: skip
    assert costs.frame_cheaper(1)
    costs.refuse_frames()
    assert not costs.frame_cheaper(1) and costs.frame_seconds() is None
    model = costs.cost_model()
    assert model.offload[0] > 100 and model.offload[1] == pytest.approx(
        costs.offload_seconds(1) * 1.9 / 0.07
    )
