"""The wire protocol on real msgpack bytes: round trips, and every kind of bad input refused."""

from __future__ import annotations

import json
import math

import msgpack
import numpy as np
import pytest

from shared.protocol import (
    ACTIVATION_KEYS,
    MAX_ID_LENGTH,
    MODEL_HASH_CHARS,
    ProtocolError,
    Reply,
    ReplyError,
    Result,
    Topics,
    decode_activation,
    decode_reply,
    decode_result,
    dequantize,
    encode_activation,
    encode_reply,
    encode_result,
    iso_utc,
    validate_id,
)

HASH = "ab" * 32


def activation(tensor: np.ndarray | None = None, encoding: str = "fp32", **over) -> bytes:
    args = dict(
        device_id="cam1",
        frame_id=7,
        captured_at=1_700_000_000.25,
        split_block=6,
        model_hash=HASH,
        exit_confidence=0.4,
        exit_class=3,
        tensor=np.arange(24, dtype=np.float32).reshape(2, 3, 4) / 10 if tensor is None else tensor,
        encoding=encoding,
    )
    args.update(over)
    return encode_activation(**args)


def tamper(payload: bytes, **changes) -> bytes:
    """The activation with fields (by name: ``frame_id``, ``tensor_shape``) set to bad values."""
    body = msgpack.unpackb(payload, raw=False)
    for name, value in changes.items():
        name = name.removeprefix("tensor_")
        body[ACTIVATION_KEYS.get(name, name)] = value
    return msgpack.packb(body, use_bin_type=True)


def as_version_1(payload: bytes) -> bytes:
    """The same activation as a version-1 node wrote it: keys spelled out, the tensor nested."""
    body = msgpack.unpackb(payload, raw=False)
    tensor_fields = ("encoding", "shape", "data", "scale", "zero_point")
    old = {"v": 1, "audit": False, "tensor": {}}
    for name, key in ACTIVATION_KEYS.items():
        if key in body:
            (old["tensor"] if name in tensor_fields else old)[name] = body[key]
    return msgpack.packb(old, use_bin_type=True)


def test_topics_are_defined_once_under_the_prefix() -> None:
    t = Topics("site1")
    assert t.activation("cam1") == "site1/cam1/activation"
    assert t.reply("cam1") == "site1/cam1/reply"
    assert t.result("cam1") == "site1/cam1/result"
    assert t.status("cam1") == "site1/cam1/status"
    assert t.stats("cam1") == "site1/cam1/stats"
    assert t.worker_status("w1") == "site1/workers/w1/status"
    assert t.shared_activations("g") == "$share/g/site1/+/activation"
    assert t.device_of("site1/cam1/activation") == "cam1"


@pytest.mark.parametrize(
    ("value", "match"),
    [
        ("", "non-empty"),
        ("a/b", "/"),
        ("a+", r"\+"),
        ("#", "#"),
        ("x" * (MAX_ID_LENGTH + 1), "longer than 64"),
        ("workers", "reserved"),
        ("$SYS", "leading"),
    ],
)
def test_bad_ids_are_refused_with_the_reason(value: str, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        validate_id(value)
    if value != "workers":
        with pytest.raises(ValueError):
            Topics(value)


@pytest.mark.parametrize("encoding", ["fp32", "fp16", "int8", "int4"])
def test_activation_round_trip(encoding: str) -> None:
    x = np.random.default_rng(0).normal(size=(16, 8, 8)).astype(np.float32)
    act = decode_activation(activation(x, encoding))
    assert (act.device_id, act.frame_id, act.split_block, act.exit_class) == ("cam1", 7, 6, 3)
    assert act.model_hash == HASH[:MODEL_HASH_CHARS] and act.shape == (16, 8, 8)
    assert not act.audit
    span = x.max() - x.min()
    tol = {"fp32": 0, "fp16": 2e-3 * np.abs(x).max(), "int8": span / 255 * 0.51}
    tol["int4"] = span / 15 * 0.51
    assert np.abs(act.array() - x).max() <= tol[encoding] + 1e-7
    assert decode_activation(activation(x, encoding, audit=True)).audit


@pytest.mark.parametrize("encoding", ["fp32", "int8"])
def test_a_version_1_activation_still_decodes_to_the_same_message(encoding: str) -> None:
    """Workers upgraded before their nodes keep serving them."""
    x = np.random.default_rng(2).normal(size=(16, 8, 8)).astype(np.float32)
    new = activation(x, encoding)
    old = as_version_1(new)
    assert msgpack.unpackb(old, raw=False)["tensor"]["encoding"] == encoding
    assert decode_activation(old) == decode_activation(new)
    # A version-1 node sends the whole hash; errors name fields as it wrote them.
    body = msgpack.unpackb(old, raw=False)
    body["model_hash"] = HASH
    assert decode_activation(msgpack.packb(body, use_bin_type=True)).model_hash == HASH
    body["frame_id"] = "7"
    with pytest.raises(ProtocolError, match="'frame_id' should be int"):
        decode_activation(msgpack.packb(body, use_bin_type=True))
    del body["tensor"]["encoding"]
    with pytest.raises(ProtocolError, match=r"lacks the key 'tensor\.encoding'"):
        decode_activation(msgpack.packb(body, use_bin_type=True))


def test_the_header_is_small_beside_a_small_models_tensor() -> None:
    """Version 2's short keys and hash prefix: an int8 message of block 3 of the 32 px digits
    model (24 x 8 x 8) is within 0.27 of its fp32 message; version 1's was 0.281."""
    x = np.random.default_rng(3).normal(size=(24, 8, 8)).astype(np.float32)
    fp32, int8 = activation(x, "fp32"), activation(x, "int8")
    assert len(int8) - x.size <= 140
    assert len(int8) <= 0.27 * len(fp32)
    assert len(as_version_1(int8)) > 0.27 * len(as_version_1(fp32))


def test_int8_is_about_a_quarter_of_fp32_and_raw_bytes() -> None:
    x = np.random.default_rng(1).random((32, 16, 16)).astype(np.float32)
    fp32, int8 = activation(x, "fp32"), activation(x, "int8")
    assert len(int8) <= 0.27 * len(fp32)
    assert x.tobytes() in fp32  # raw bytes, no base64


def test_int4_packs_two_codes_a_byte_low_nibble_first() -> None:
    """The documented layout (docs/protocol.md), on an odd count: codes 0..15 of a ramp."""
    x = np.arange(15, dtype=np.float32).reshape(3, 5)  # 0..14: scale 14/15, zero point 0
    body = msgpack.unpackb(activation(x, "int4"), raw=False)
    data = body[ACTIVATION_KEYS["data"]]
    assert len(data) == 8 and body[ACTIVATION_KEYS["zero_point"]] == 0
    codes = np.rint(x.reshape(-1) / body[ACTIVATION_KEYS["scale"]]).astype(np.uint8)
    assert data[0] == codes[0] | codes[1] << 4 and data[7] == codes[14]  # high bits of pad: 0
    assert np.abs(decode_activation(activation(x, "int4")).array() - x).max() <= 14 / 15 / 2 + 1e-6


def test_int4_is_about_an_eighth_of_fp32() -> None:
    x = np.random.default_rng(4).normal(size=(24, 8, 8)).astype(np.float32)
    fp32, int4 = activation(x, "fp32"), activation(x, "int4")
    assert len(int4) - x.size // 2 <= 140 and len(int4) <= 0.15 * len(fp32)


def test_fp16_bytes_are_numpys_rounding_and_the_decode_table_is_exact() -> None:
    """fp16 bytes on the wire are numpy's round-to-nearest-even, overflow and subnormals
    included, for any input layout; decoding goes through a table of every float16 pattern,
    which must give numpy's float32 for each of the 65,536 (NaNs as NaN)."""
    rng = np.random.default_rng(5)
    x = np.concatenate(
        [
            rng.normal(scale=s, size=4096).astype(np.float32)
            for s in (1e-7, 1e-5, 1e-2, 1.0, 1e3, 6e4)
        ]
        + [np.array([65519.0, 65520.0, 7e4, -7e4, 0.0, -0.0, 2.0**-25], np.float32)]
    )
    body = msgpack.unpackb(activation(x, "fp16"), raw=False)
    with np.errstate(over="ignore"):  # 7e4 overflows to infinity, as it should
        assert body[ACTIVATION_KEYS["data"]] == x.astype(np.float16).tobytes()
    y = np.broadcast_to(x[:8192], (2, 8192))[:, ::2]  # read-only, not contiguous
    assert not y.flags.writeable and not y.flags.c_contiguous
    body = msgpack.unpackb(activation(y, "fp16"), raw=False)
    assert body[ACTIVATION_KEYS["data"]] == y.astype(np.float16).tobytes()
    finite = x[np.abs(x) < 6e4]
    decoded = decode_activation(activation(finite, "fp16")).array()
    assert np.array_equal(decoded, finite.astype(np.float16).astype(np.float32))
    every = np.arange(1 << 16, dtype=np.uint32).astype(np.uint16)
    table = dequantize(every.tobytes(), "fp16", (every.size,), 1.0, 0)
    assert np.array_equal(table, every.view(np.float16).astype(np.float32), equal_nan=True)


@pytest.mark.parametrize("encoding", ["int8", "int4"])
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_quantising_non_finite_values_is_a_clear_error(encoding: str, bad: float) -> None:
    x = np.ones((2, 3), np.float32)
    x[0, 1] = bad
    with pytest.raises(ValueError, match=f"NaN or infinite values: {encoding} cannot encode"):
        activation(x, encoding)


def test_constant_tensor_survives_int8() -> None:
    x = np.full((4, 2, 2), 0.5, np.float32)
    assert np.allclose(decode_activation(activation(x, "int8")).array(), 0.5, atol=0.5 / 255)


@pytest.mark.parametrize(
    ("payload", "kind", "match"),
    [
        (b"", "decode", "msgpack"),
        (b"\xc1garbage", "decode", "msgpack"),
        (msgpack.packb([1, 2, 3]), "decode", "map"),
        (tamper(activation(), v=3), "version", "schema version 3"),
        (tamper(activation(), v="2"), "version", "schema version '2'"),
        (tamper(activation(), frame_id="7"), "decode", r"frame_id \('fr'\) should be int"),
        (tamper(activation(), frame_id=True), "decode", "boolean"),
        (tamper(activation(), frame_id=-1), "decode", "frame_id"),
        (tamper(activation(), split_block=25), "decode", "split_block"),
        (tamper(activation(), model_hash="xyz"), "decode", "hex"),
        (tamper(activation(), device_id="a/b"), "decode", "device id"),
        (tamper(activation(), exit_confidence=1.5), "decode", "exit_confidence"),
        (tamper(activation(), exit_confidence=float("nan")), "decode", "exit_confidence"),
        (tamper(activation(), tensor_encoding="bf16"), "decode", "encoding"),
        (tamper(activation(), tensor_shape=[2, 3, 5]), "decode", "needs 120 bytes"),
        (tamper(activation(), tensor_shape=[65536, 65536, 65536]), "decode", "needs"),
        (tamper(activation(), tensor_shape=[]), "decode", "shape"),
        (tamper(activation(), tensor_data="text"), "decode", "bytes"),
        (tamper(activation(), audit=1), "decode", "audit"),
        (tamper(activation(encoding="int8"), tensor_scale=0.0), "decode", "scale"),
        (tamper(activation(encoding="int8"), tensor_zero_point=300), "decode", "zero point"),
        (tamper(activation(encoding="int4"), tensor_zero_point=16), "decode", r"\[0, 15\]"),
        (tamper(activation(encoding="int4"), tensor_scale=-1.0), "decode", "scale"),
        (tamper(activation(encoding="int4"), tensor_data=b"\0" * 24), "decode", "needs 12 bytes"),
        # Steps that overflow float32 once decoded, or round to 0 in it:
        (tamper(activation(encoding="int8"), tensor_scale=1e300), "decode", "scale"),
        (tamper(activation(encoding="int4"), tensor_scale=1e-50), "decode", "positive"),
        (
            tamper(activation(np.ones(5, np.float32), "int4"), tensor_data=b"\0\0\xf0"),
            "decode",
            "padding bits",
        ),
    ],
)
def test_bad_activations_raise_protocol_error(payload: bytes, kind: str, match: str) -> None:
    with pytest.raises(ProtocolError, match=match) as info:
        decode_activation(payload)
    assert info.value.kind == kind


@pytest.mark.parametrize("encoding", ["fp32", "fp16"])
@pytest.mark.parametrize("bad", [np.inf, -np.inf, np.nan])
def test_non_finite_tensor_values_are_refused(encoding: str, bad: float) -> None:
    x = np.ones((2, 2, 2), np.float32)
    x[1, 1, 1] = bad
    with pytest.raises(ProtocolError, match="NaN or infinite"):
        decode_activation(activation(x, encoding))
    x[1, 1, 1] = 65504.0 if encoding == "fp16" else 3e38  # the largest finite values pass
    assert decode_activation(activation(x, encoding)).array().max() == x.max()


def test_oversize_payload_is_refused_before_decoding() -> None:
    with pytest.raises(ProtocolError, match="over the limit") as info:
        decode_activation(activation(), max_bytes=100)
    assert info.value.kind == "too_large"


def test_declared_sizes_never_exceed_the_payload() -> None:
    """A bin header announcing 4 GB in a 20-byte message fails fast instead of allocating."""
    for version, inner in ((1, {"tensor": {}}), (2, {"sh": [1]})):
        evil = msgpack.packb({"v": version, **inner})[:-1] + b"\xc6\xff\xff\xff\xf0"
        with pytest.raises(ProtocolError):
            decode_activation(evil)


def test_reply_round_trip_and_errors() -> None:
    ok = decode_reply(encode_reply(Reply(7, "w1", label=3, confidence=0.9, cloud_ms=1.5)))
    assert ok.ok and (ok.frame_id, ok.label, ok.confidence, ok.worker_id) == (7, 3, 0.9, "w1")
    err = decode_reply(encode_reply(Reply(None, "w1", error=ReplyError("shape", "bad shape"))))
    assert not err.ok and err.error == ReplyError("shape", "bad shape")
    bad = msgpack.packb({"v": 1, "frame_id": 1, "worker_id": "w", "label": 2, "confidence": 2.0})
    with pytest.raises(ProtocolError, match="confidence"):
        decode_reply(bad)


def test_result_is_plain_json_with_the_documented_keys() -> None:
    result = Result(
        device_id="cam1",
        frame_id=0,
        label=4,
        class_name="4",
        confidence=0.97,
        exit_block=3,
        split_block=3,
        source="edge",
        captured_at=iso_utc(0.5),
        latency_ms=3.2,
        model_hash=HASH,
    )
    body = json.loads(encode_result(result))
    assert set(body) == {
        "device_id",
        "frame_id",
        "label",
        "class_name",
        "confidence",
        "exit_block",
        "split_block",
        "source",
        "captured_at",
        "latency_ms",
        "model_hash",
    }
    assert body["captured_at"] == "1970-01-01T00:00:00.500Z"
    assert decode_result(encode_result(result)) == result
    with pytest.raises(ProtocolError, match="source"):
        decode_result(json.dumps({**body, "source": "magic"}).encode())
    assert not math.isnan(body["confidence"])


# -- issue 21: wire details defined once ---------------------------------------------------------
def test_correlation_data_names_this_run_s_frames_and_probes_only() -> None:
    from shared.protocol import (
        RUN_ID_BYTES,
        offload_correlation,
        offload_frame_id,
        probe_correlation,
        probe_seq,
    )

    run, other = b"r" * RUN_ID_BYTES, b"o" * RUN_ID_BYTES
    corr = offload_correlation(run, 2**40 + 3)
    assert len(corr) == 16 and offload_frame_id(corr, run) == 2**40 + 3
    assert offload_frame_id(corr, other) is None and offload_frame_id(None, run) is None
    assert offload_frame_id(corr[:-1], run) is None
    probe = probe_correlation(run, 7)
    assert len(probe) == 21 and probe.startswith(b"probe") and probe_seq(probe, run) == 7
    assert probe_seq(probe, other) is None and probe_seq(corr, run) is None
    assert offload_frame_id(probe, run) is None


def test_the_header_overhead_is_what_a_real_message_adds_to_its_tensor() -> None:
    from shared.protocol import HEADER_BYTES, MAX_ID_LENGTH, NUM_BLOCKS, tensor_bytes

    for device_id, encoding in (("cam", "fp16"), ("c" * MAX_ID_LENGTH, "int8")):
        x = np.ones((24, 56, 56), np.float32)
        message = encode_activation(
            device_id=device_id,
            frame_id=12345,
            captured_at=1.7e9,
            split_block=3,
            model_hash="ab" * 32,
            exit_confidence=0.4,
            exit_class=NUM_BLOCKS,
            tensor=x,
            encoding=encoding,
            audit=True,
        )
        overhead = len(message) - tensor_bytes(x.size, encoding)
        assert 0 < overhead <= HEADER_BYTES  # an upper bound, and a tight one for the longest id
    assert overhead >= HEADER_BYTES - 16  # the measured one has a 64-bit frame id
