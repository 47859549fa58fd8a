"""The wire protocol between camera nodes, cloud workers and the apps that read results.

Pure logic, no I/O: topic names, message dataclasses, and their encoders and decoders.
Everything a node or a worker receives goes through a decoder here first, and every decoder
either returns a fully checked message or raises :class:`ProtocolError` with a ``kind`` (for
counting) and a message saying what is wrong. Sizes declared inside a message are never trusted
before they are checked against the bytes actually present, so a hostile payload cannot make a
decoder allocate more than the payload itself.

Activations and replies are msgpack maps (raw bytes for the tensor: no base64, no pickle);
results, status and stats are JSON or plain text, for other apps. ``docs/protocol.md`` is the
reference for users.
"""

from __future__ import annotations

import functools
import json
import math
import re
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

import msgpack
import numpy as np

from shared.errors import IsplitEEError

__all__ = [
    "ACTIVATION_KEYS",
    "ACTIVATION_VERSION",
    "BITS",
    "ENCODINGS",
    "FRAME_BLOCK",
    "FRAME_ENCODING",
    "HEADER_BYTES",
    "MAX_ID_LENGTH",
    "MAX_PAYLOAD_BYTES",
    "MODEL_HASH_CHARS",
    "NUM_BLOCKS",
    "REPLY_VERSION",
    "RUN_ID_BYTES",
    "SOURCES",
    "Activation",
    "ExitAnswer",
    "ProtocolError",
    "Reply",
    "ReplyError",
    "Result",
    "Topics",
    "decode_activation",
    "decode_reply",
    "decode_result",
    "dequantize",
    "encode_activation",
    "encode_frame_activation",
    "encode_reply",
    "encode_result",
    "encode_tensor",
    "iso_utc",
    "offload_correlation",
    "offload_frame_id",
    "probe_correlation",
    "probe_seq",
    "tensor_bytes",
    "validate_id",
]

ACTIVATION_VERSION = 2
"""Version of the activation map this side writes. Version 2 has two-letter keys in one flat map
(version 1 spelled every key out and nested the tensor: its names were 133 of an int8 message's
252 header bytes, more than the tensor itself at the deeper splits of a small model). The
decoder reads versions 1 and 2, so workers upgraded first keep serving nodes not yet upgraded."""

_ACTIVATION_VERSIONS = (1, 2)

REPLY_VERSION = 1
"""Version of the reply map; a decoder refuses any other."""

ACTIVATION_KEYS = {
    "device_id": "id",
    "frame_id": "fr",
    "captured_at": "ts",
    "split_block": "sp",
    "model_hash": "mh",
    "exit_confidence": "ec",
    "exit_class": "ek",
    "audit": "au",
    "encoding": "en",
    "shape": "sh",
    "data": "da",
    "scale": "sc",
    "zero_point": "zp",
}
"""Field name -> its key in a version-2 activation map (``docs/protocol.md`` lists both)."""

_TENSOR_FIELDS = ("encoding", "shape", "data", "scale", "zero_point")

MODEL_HASH_CHARS = 16
"""Leading hex digits of the checkpoint hash a node sends: 64 bits tell a fleet's checkpoints
apart (the worker matches any unique prefix of 12 or more) and save 48 bytes a message."""

MAX_PAYLOAD_BYTES = 16 * 1024 * 1024
"""Default cap on a message's size: the largest default split at 224 px is under 2 MB in fp32."""

MAX_ID_LENGTH = 64
BITS = {"fp32": 32, "fp16": 16, "int8": 8, "int4": 4}
"""Bits per value of each tensor encoding."""
ENCODINGS = tuple(BITS)
SOURCES = ("edge", "cloud", "fallback")
Encoding = Literal["fp32", "fp16", "int8", "int4"]
Source = Literal["edge", "cloud", "fallback"]

NUM_BLOCKS = 19
"""Blocks in MobileNetV2's ``features``, numbered 1..19 as in the paper; the final classifier
follows the last. ``split_block`` is 0..NUM_BLOCKS on the wire; the whole network is
``NUM_BLOCKS`` blocks deep wherever a cost is counted in blocks."""

FRAME_BLOCK = 0
"""``split_block`` of a frame offload: no block ran on the device, the message carries the
frame itself and the worker runs the whole network (docs/protocol.md, "Frame offload")."""
FRAME_ENCODING = "jpeg"
"""``encoding`` of a frame offload: ``data`` is a JPEG of the frame, ``shape`` its (H, W, 3)."""

_DTYPES = {
    "fp32": np.dtype("<f4"),
    "fp16": np.dtype("<f2"),
    "int8": np.dtype("i1"),
    "int4": np.dtype("u1"),  # two codes a byte
}
_QUANTISED = {"int8": (-128, 127), "int4": (0, 15)}
_F32_MAX = float(np.finfo(np.float32).max)
"""Quantised encodings and the range of their codes (and of their zero point)."""
_RESERVED_IDS = frozenset({"workers"})
_HASH_RE = re.compile(r"[0-9a-f]{12,64}")


class ProtocolError(IsplitEEError):
    """A message that cannot be used. ``kind`` is a short tag for counting errors by kind."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind


# -- topics ----------------------------------------------------------------------------------


def validate_id(value: str, what: str = "device id") -> str:
    """A prefix, device id or worker id must be one plain topic level."""
    if not isinstance(value, str) or not value:
        raise ValueError(f"{what} should be a non-empty string, got {value!r}")
    if len(value) > MAX_ID_LENGTH:
        raise ValueError(f"{what} {value!r} is longer than {MAX_ID_LENGTH} characters")
    bad = [c for c in ("+", "#", "/", "\x00") if c in value]
    if bad or value.startswith("$") or value != value.strip():
        raise ValueError(
            f"{what} {value!r} should not contain {' '.join(bad) or 'leading $ or spaces'}: "
            "MQTT reads those as wildcards or topic separators; use letters, digits, - and _"
        )
    if what == "device id" and value in _RESERVED_IDS:
        raise ValueError(f"device id {value!r} is reserved for the workers' own topics")
    return value


@dataclass(frozen=True)
class Topics:
    """Every topic of one deployment, defined in one place (the prefix is one topic level)."""

    prefix: str = "isplitee"

    def __post_init__(self) -> None:
        validate_id(self.prefix, "topic prefix")

    def activation(self, device_id: str) -> str:
        return f"{self.prefix}/{device_id}/activation"

    def reply(self, device_id: str) -> str:
        return f"{self.prefix}/{device_id}/reply"

    def result(self, device_id: str) -> str:
        return f"{self.prefix}/{device_id}/result"

    def status(self, device_id: str) -> str:
        return f"{self.prefix}/{device_id}/status"

    def state(self, device_id: str) -> str:
        """What the camera sees now, debounced (retained JSON; ``device/events.py``)."""
        return f"{self.prefix}/{device_id}/state"

    def events(self, device_id: str) -> str:
        """Label events: ``start`` / ``update`` / ``end`` (JSON)."""
        return f"{self.prefix}/{device_id}/events"

    def snapshot(self, device_id: str) -> str:
        """The current event's best frame (retained JPEG)."""
        return f"{self.prefix}/{device_id}/snapshot"

    def stats(self, device_id: str) -> str:
        return f"{self.prefix}/{device_id}/stats"

    def probe(self, device_id: str) -> str:
        """The node's own echo topic: it times round trips through the broker on it."""
        return f"{self.prefix}/{device_id}/probe"

    def settings(self, device_id: str) -> str:
        """What a node listens on for runtime settings: ``<prefix>/<device>/set/<key>``."""
        return f"{self.prefix}/{device_id}/set/+"

    def setting(self, device_id: str, key: str) -> str:
        return f"{self.prefix}/{device_id}/set/{key}"

    def config(self, device_id: str) -> str:
        """The node's effective settings (retained JSON), echoed after every change."""
        return f"{self.prefix}/{device_id}/config"

    def worker_status(self, worker_id: str) -> str:
        return f"{self.prefix}/workers/{worker_id}/status"

    def worker_check(self) -> str:
        """Where a worker checks at start that the broker delivers it activations: its own
        zero-byte message there must come back through ``<prefix>/+/activation`` (``workers``
        is no device's id)."""
        return f"{self.prefix}/workers/activation"

    def shared_activations(self, group: str) -> str:
        """What every worker of ``group`` subscribes to: the broker hands each message to one."""
        return f"$share/{group}/{self.prefix}/+/activation"

    def device_of(self, topic: str) -> str:
        """The device id in a node topic (``<prefix>/<device>/<kind>``)."""
        parts = topic.split("/")
        if len(parts) != 3 or parts[0] != self.prefix:
            raise ProtocolError("topic", f"topic {topic!r} is not {self.prefix}/<device>/<kind>")
        return parts[1]


# -- tensors ---------------------------------------------------------------------------------


def tensor_bytes(elements: int, encoding: Encoding) -> int:
    """Bytes of ``elements`` values in ``encoding`` on the wire (int4 packs two to a byte)."""
    return (elements * BITS[encoding] + 7) // 8


def _to_fp16(x: np.ndarray) -> np.ndarray:
    return x.astype(np.float16)


@functools.cache
def _half_to_single() -> np.ndarray:
    """float32 value of every float16 bit pattern (256 KB, built once): one gather decodes a
    tensor. numpy's own float16 cast is scalar and branches on each value, about 2-3x slower
    on activations (the codec table of docs/benchmarks.md); the table gives the same floats
    by construction (tests/test_protocol.py checks every pattern)."""
    table = np.arange(1 << 16, dtype=np.uint32).astype(np.uint16).view(np.float16)
    table = table.astype(np.float32)
    table.flags.writeable = False
    return table


def _from_fp16(raw: np.ndarray) -> np.ndarray:
    return _half_to_single()[raw.view(np.uint16)]


def _affine(x: np.ndarray, encoding: str) -> tuple[np.ndarray, float, int]:
    """Per-tensor affine codes: the range of this tensor (0 included) mapped onto the codes'
    range, which keeps the error below half a step wherever the values lie."""
    qmin, qmax = _QUANTISED[encoding]
    lo, hi = float(x.min(initial=0.0)), float(x.max(initial=0.0))
    if not (math.isfinite(lo) and math.isfinite(hi)):
        raise ValueError(f"tensor holds NaN or infinite values: {encoding} cannot encode it")
    scale = (hi - lo) / (qmax - qmin) or 1.0
    zero_point = min(max(round(qmin - lo / scale), qmin), qmax)
    q = np.clip(np.rint(x / scale) + zero_point, qmin, qmax)
    return q, scale, zero_point


def encode_tensor(array: np.ndarray, encoding: Encoding) -> dict[str, Any]:
    """The tensor fields of an activation map in ``encoding``, under their wire keys.

    int8 and int4 are per-tensor affine: ``x ~ (q - zero_point) * scale``. int4 codes are 0..15,
    packed two to a byte in C order, the even-indexed value in the low four bits; an odd count
    leaves the last byte's high bits zero.
    """
    x = np.asarray(array, dtype=np.float32)
    if encoding not in _DTYPES:
        raise ValueError(f"encoding should be one of {', '.join(ENCODINGS)}, got {encoding!r}")
    k = ACTIVATION_KEYS
    out: dict[str, Any] = {k["encoding"]: encoding, k["shape"]: list(x.shape)}
    if encoding in _QUANTISED:
        q, scale, zero_point = _affine(x, encoding)
        if encoding == "int8":
            data = q.astype(np.int8).tobytes()
        else:
            codes = q.astype(np.uint8).reshape(-1)
            if codes.size % 2:
                codes = np.append(codes, np.uint8(0))
            data = (codes[0::2] | (codes[1::2] << 4)).tobytes()
        out.update({k["scale"]: scale, k["zero_point"]: zero_point, k["data"]: data})
    elif encoding == "fp16":
        out[k["data"]] = _to_fp16(x).astype("<f2", copy=False).tobytes()
    else:
        out[k["data"]] = x.astype("<f4", copy=False).tobytes()
    return out


def dequantize(data: bytes, encoding: Encoding, shape: tuple[int, ...], scale: float, zp: int):
    """float32 array from checked tensor bytes (views the buffer where it can)."""
    raw = np.frombuffer(data, dtype=_DTYPES[encoding])
    if encoding == "int4":
        codes = np.empty(2 * raw.size, np.uint8)
        codes[0::2] = raw & 0x0F
        codes[1::2] = raw >> 4
        raw = codes[: math.prod(shape)]
    raw = raw.reshape(shape)
    if encoding in _QUANTISED:
        return (raw.astype(np.float32) - np.float32(zp)) * np.float32(scale)
    if encoding == "fp16":
        return _from_fp16(raw)
    return raw.astype(np.float32, copy=False)


def _finite_values(data: bytes, encoding: Encoding) -> bool:
    if encoding == "fp16":  # exponent bits all ones is an infinity or a NaN: a bit test is 10x
        return bool((np.frombuffer(data, "<u2") & 0x7FFF).max(initial=0) < 0x7C00)  # isfinite
    return bool(np.isfinite(np.frombuffer(data, dtype=_DTYPES[encoding])).all())


# -- messages --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Activation:
    """Device -> worker: one frame's split-block activation and what the device saw at the exit."""

    device_id: str
    frame_id: int
    captured_at: float
    """Unix time of capture, seconds."""
    split_block: int
    model_hash: str
    """The checkpoint's hash or a prefix of it (nodes send ``MODEL_HASH_CHARS`` hex digits)."""
    exit_confidence: float
    exit_class: int
    encoding: Encoding | Literal["jpeg"]
    shape: tuple[int, ...]
    data: bytes = field(repr=False)
    scale: float = 1.0
    zero_point: int = 0
    audit: bool = False
    """Offloaded although the exit was confident: the node checks its exits against the cloud."""

    @property
    def is_frame(self) -> bool:
        """A frame offload: ``data`` is the frame's JPEG, decoded by the worker."""
        return self.encoding == FRAME_ENCODING

    def array(self) -> np.ndarray:
        """The activation as float32 (batch dimension included); not for a frame offload."""
        if self.is_frame:
            raise ValueError("a frame offload holds a JPEG: decode it with shared.jpeg")
        return dequantize(self.data, self.encoding, self.shape, self.scale, self.zero_point)


@dataclass(frozen=True)
class ReplyError:
    kind: str
    message: str


@dataclass(frozen=True)
class ExitAnswer:
    """What one exit the cloud computed said: its block, class and temperature-scaled
    confidence (the cloud half runs through the exits after the split anyway)."""

    block: int
    label: int
    confidence: float


@dataclass(frozen=True)
class Reply:
    """Worker -> device: the final classifier's answer for one frame, or why there is none."""

    frame_id: int | None
    worker_id: str
    label: int | None = None
    confidence: float | None = None
    """C_L, the final classifier's max softmax (temperature-scaled): the node's reward needs it."""
    cloud_ms: float = 0.0
    error: ReplyError | None = None
    exits: tuple[ExitAnswer, ...] = ()
    """The exits after the split, shallowest first (the final classifier excluded); empty when
    the worker's backend does not give them. A node learns every exit from an offload it made
    whatever its exit said (an audit, a frame), without running them itself."""

    @property
    def ok(self) -> bool:
        return self.error is None


@dataclass(frozen=True)
class Result:
    """One frame's final answer, the public contract (JSON on ``<prefix>/<device>/result``)."""

    device_id: str
    frame_id: int
    label: int
    class_name: str
    confidence: float
    exit_block: int
    split_block: int
    source: Source
    captured_at: str
    """ISO 8601, UTC."""
    latency_ms: float
    model_hash: str


def iso_utc(unix_seconds: float) -> str:
    """ISO 8601 UTC with milliseconds and a ``Z``, as most MQTT consumers parse it."""
    dt = datetime.fromtimestamp(unix_seconds, tz=UTC)
    return dt.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _header(
    device_id: str,
    frame_id: int,
    captured_at: float,
    split_block: int,
    model_hash: str,
    exit_confidence: float,
    exit_class: int,
    audit: bool,
) -> dict[str, Any]:
    """The fields every activation map carries before its data."""
    k = ACTIVATION_KEYS
    body: dict[str, Any] = {
        "v": ACTIVATION_VERSION,
        k["device_id"]: device_id,
        k["frame_id"]: int(frame_id),
        k["captured_at"]: float(captured_at),
        k["split_block"]: int(split_block),
        k["model_hash"]: model_hash[:MODEL_HASH_CHARS],
        k["exit_confidence"]: float(exit_confidence),
        k["exit_class"]: int(exit_class),
    }
    if audit:  # absent means false: most frames are not audits
        body[k["audit"]] = True
    return body


def encode_activation(
    *,
    device_id: str,
    frame_id: int,
    captured_at: float,
    split_block: int,
    model_hash: str,
    exit_confidence: float,
    exit_class: int,
    tensor: np.ndarray,
    encoding: Encoding,
    audit: bool = False,
) -> bytes:
    body = _header(
        device_id,
        frame_id,
        captured_at,
        split_block,
        model_hash,
        exit_confidence,
        exit_class,
        audit,
    )
    body.update(encode_tensor(tensor, encoding))
    return msgpack.packb(body, use_bin_type=True)


def encode_frame_activation(
    *,
    device_id: str,
    frame_id: int,
    captured_at: float,
    model_hash: str,
    jpeg: bytes,
    shape: tuple[int, int, int],
    exit_confidence: float = 0.0,
    exit_class: int = 0,
    audit: bool = False,
) -> bytes:
    """A frame offload: the activation map with ``split_block`` 0 and the frame's JPEG as its
    data. ``exit_confidence``/``exit_class``: the exit the node computed before it chose to
    send the frame instead (0 when it computed none)."""
    body = _header(
        device_id,
        frame_id,
        captured_at,
        FRAME_BLOCK,
        model_hash,
        exit_confidence,
        exit_class,
        audit,
    )
    k = ACTIVATION_KEYS
    body[k["encoding"]] = FRAME_ENCODING
    body[k["shape"]] = [int(d) for d in shape]
    body[k["data"]] = bytes(jpeg)
    return msgpack.packb(body, use_bin_type=True)


def encode_reply(reply: Reply) -> bytes:
    body: dict[str, Any] = {
        "v": REPLY_VERSION,
        "frame_id": reply.frame_id,
        "worker_id": reply.worker_id,
    }
    if reply.error is not None:
        body["error"] = {"kind": reply.error.kind, "message": reply.error.message}
    else:
        body.update(label=reply.label, confidence=reply.confidence, cloud_ms=reply.cloud_ms)
        if reply.exits:
            body["exits"] = [[x.block, x.label, x.confidence] for x in reply.exits]
    return msgpack.packb(body, use_bin_type=True)


def encode_result(result: Result) -> bytes:
    return json.dumps(asdict(result), separators=(",", ":"), allow_nan=False).encode()


# -- sizes and correlation data ------------------------------------------------------------


def _header_bytes() -> int:
    """What an activation message carries besides its tensor's data, measured on a real one:
    the longest device id, a 64-bit frame id, an audit, an int8 tensor (scale and zero point
    too) of 64 KiB (a 32-bit length before its bytes). An upper bound of the msgpack map; the
    MQTT framing (topic, properties) is not counted."""
    tensor = np.zeros((1, 16, 64, 64), np.float32)
    message = encode_activation(
        device_id="d" * MAX_ID_LENGTH,
        frame_id=2**63 - 1,
        captured_at=1.0,
        split_block=NUM_BLOCKS,
        model_hash="f" * MODEL_HASH_CHARS,
        exit_confidence=1.0,
        exit_class=2**16 - 1,
        tensor=tensor,
        encoding="int8",
        audit=True,
    )
    return len(message) - tensor_bytes(tensor.size, "int8")


HEADER_BYTES = _header_bytes()
"""Bytes an offload sends besides its payload (tensor data or JPEG): what the node's and the
simulator's measured costs add to every payload."""

RUN_ID_BYTES = 8
"""A node draws this many random bytes at start: the first part of its correlation data, so a
reply meant for an earlier run of the node (or another node) never matches."""
_SEQ_BYTES = 8  # a frame id or a probe's number, big-endian, after the run id
_PROBE = b"probe"


def offload_correlation(run_id: bytes, frame_id: int) -> bytes:
    """Correlation Data of an offload: the run id and the frame id (16 bytes); the worker
    sends it back with its reply."""
    return run_id + frame_id.to_bytes(_SEQ_BYTES, "big")


def offload_frame_id(correlation: bytes | None, run_id: bytes) -> int | None:
    """The frame id a reply's Correlation Data names, None when it is not this run's."""
    corr = correlation or b""
    if len(corr) != RUN_ID_BYTES + _SEQ_BYTES or corr[:RUN_ID_BYTES] != run_id:
        return None
    return int.from_bytes(corr[RUN_ID_BYTES:], "big")


def probe_correlation(run_id: bytes, seq: int) -> bytes:
    """Correlation Data of a node's own round-trip probe: ``probe``, the run id, its number."""
    return _PROBE + run_id + seq.to_bytes(_SEQ_BYTES, "big")


def probe_seq(correlation: bytes | None, run_id: bytes) -> int | None:
    """The number of this run's probe a message's Correlation Data names, else None."""
    corr, head = correlation or b"", len(_PROBE) + RUN_ID_BYTES
    if len(corr) != head + _SEQ_BYTES or corr[: len(_PROBE)] != _PROBE:
        return None
    if corr[len(_PROBE) : head] != run_id:
        return None
    return int.from_bytes(corr[head:], "big")


# -- decoding --------------------------------------------------------------------------------


def _unpack(payload: bytes, max_bytes: int, versions: tuple[int, ...]) -> dict[str, Any]:
    if not isinstance(payload, bytes | bytearray | memoryview):
        raise ProtocolError("decode", f"payload should be bytes, got {type(payload).__name__}")
    if len(payload) > max_bytes:
        raise ProtocolError(
            "too_large", f"payload of {len(payload)} bytes is over the limit of {max_bytes}"
        )
    try:
        # Limits bound what msgpack may allocate to what the payload can really hold.
        body = msgpack.unpackb(
            payload,
            raw=False,
            strict_map_key=True,
            max_bin_len=len(payload),
            max_str_len=min(len(payload), 4096),
            max_array_len=64,
            max_map_len=64,
            max_ext_len=0,
        )
    except Exception as exc:  # msgpack raises several unrelated types for bad input
        raise ProtocolError(
            "decode", f"not a msgpack message ({type(exc).__name__}: {exc})"
        ) from None
    if not isinstance(body, dict):
        raise ProtocolError("decode", f"message should be a msgpack map, got {type(body).__name__}")
    version = body.get("v")
    if type(version) is not int or version not in versions:
        raise ProtocolError(
            "version",
            f"schema version {version!r} is not supported "
            f"(this side reads {' and '.join(map(str, versions))}; upgrade the older side)",
        )
    return body


def _get(
    body: dict[str, Any],
    key: str,
    kind: type | tuple[type, ...],
    what: str = "",
    label: str | None = None,
) -> Any:
    named = label or repr(key)  # how the error names the field
    if key not in body:
        raise ProtocolError("decode", f"{what or 'message'} lacks the key {named}")
    value = body[key]
    # bool is an int in Python; no numeric field of ours accepts one.
    if isinstance(value, bool) and bool not in (kind if isinstance(kind, tuple) else (kind,)):
        raise ProtocolError("decode", f"{named} should not be a boolean")
    if not isinstance(value, kind):
        names = kind.__name__ if isinstance(kind, type) else "/".join(k.__name__ for k in kind)
        raise ProtocolError("decode", f"{named} should be {names}, got {type(value).__name__}")
    return value


def _finite(value: float, key: str, lo: float = -math.inf, hi: float = math.inf) -> float:
    value = float(value)
    if not math.isfinite(value) or not lo <= value <= hi:
        raise ProtocolError(
            "decode", f"{key!r} should be a finite number in [{lo}, {hi}], got {value}"
        )
    return value


def _id(body: dict[str, Any], key: str, what: str, label: str | None = None) -> str:
    value = _get(body, key, str, label=label)
    try:
        return validate_id(value, what)
    except ValueError as exc:
        raise ProtocolError("decode", str(exc)) from None


def _v1_as_v2(body: dict[str, Any]) -> dict[str, Any]:
    """A version-1 activation (keys spelled out, the tensor in a nested map) as a version-2 map,
    so one set of checks reads both."""
    tensor = _get(body, "tensor", dict)
    flat: dict[str, Any] = {"v": 2}
    for name, key in ACTIVATION_KEYS.items():
        source = tensor if name in _TENSOR_FIELDS else body
        if name in source:
            flat[key] = source[name]
    return flat


def decode_activation(payload: bytes, *, max_bytes: int = MAX_PAYLOAD_BYTES) -> Activation:
    """Check and decode an activation message; the tensor bytes are checked, not converted."""
    body = _unpack(payload, max_bytes, _ACTIVATION_VERSIONS)
    version = body["v"]
    if version == 1:
        body = _v1_as_v2(body)
    k = ACTIVATION_KEYS

    def label(name: str) -> str:
        # Errors name a field as its sender wrote it: "frame_id ('fr')", or version 1's
        # 'tensor.encoding'.
        if version == 1:
            return f"'tensor.{name}'" if name in _TENSOR_FIELDS else repr(name)
        return f"{name} ({k[name]!r})"

    def get(name: str, kind: type | tuple[type, ...]) -> Any:
        return _get(body, k[name], kind, label=label(name))

    encoding = get("encoding", str)
    if encoding not in _DTYPES and encoding != FRAME_ENCODING:
        raise ProtocolError(
            "decode", f"tensor encoding {encoding!r} is not one of {(*ENCODINGS, FRAME_ENCODING)}"
        )
    shape = get("shape", list)
    if not 1 <= len(shape) <= 4 or not all(type(d) is int and 1 <= d <= 65536 for d in shape):
        raise ProtocolError("decode", f"tensor shape {shape!r} should be 1 to 4 positive sizes")
    data = get("data", bytes)
    split_block = get("split_block", int)
    if not FRAME_BLOCK <= split_block <= NUM_BLOCKS:
        raise ProtocolError(
            "decode", f"split_block {split_block} should be in {FRAME_BLOCK}..{NUM_BLOCKS}"
        )
    scale, zero_point = 1.0, 0
    if encoding == FRAME_ENCODING or split_block == FRAME_BLOCK:
        _check_frame(encoding, split_block, shape, data)
    else:
        scale, zero_point = _check_tensor(get, encoding, shape, data)
    model_hash = get("model_hash", str)
    if not _HASH_RE.fullmatch(model_hash):
        raise ProtocolError("decode", f"model_hash {model_hash[:80]!r} should be 12-64 hex digits")
    frame_id = get("frame_id", int)
    if frame_id < 0:
        raise ProtocolError("decode", f"frame_id should be >= 0, got {frame_id}")
    audit = body.get(k["audit"], False)
    if not isinstance(audit, bool):
        raise ProtocolError("decode", "audit should be a boolean")
    return Activation(
        device_id=_id(body, k["device_id"], "device id", label("device_id")),
        frame_id=frame_id,
        captured_at=_finite(get("captured_at", (int, float)), "captured_at", 0.0),
        split_block=split_block,
        model_hash=model_hash,
        exit_confidence=_finite(get("exit_confidence", (int, float)), "exit_confidence", 0, 1),
        exit_class=get("exit_class", int),
        encoding=encoding,
        shape=tuple(shape),
        data=data,
        scale=scale,
        zero_point=zero_point,
        audit=audit,
    )


def _check_tensor(
    get: Callable[[str, Any], Any], encoding: Encoding, shape: list[int], data: bytes
) -> tuple[float, int]:
    """A split's tensor: its bytes fit shape and encoding, its codes their range; returns
    (scale, zero point)."""
    expected = tensor_bytes(math.prod(shape), encoding)
    if len(data) != expected:
        raise ProtocolError(
            "decode",
            f"tensor of shape {shape} in {encoding} needs {expected} bytes, got {len(data)}",
        )
    if encoding not in _QUANTISED:
        if not _finite_values(data, encoding):
            raise ProtocolError("decode", "tensor holds NaN or infinite values")
        return 1.0, 0
    qmin, qmax = _QUANTISED[encoding]
    # Decoded in float32: a scale whose steps overflow it, or round to 0, is refused.
    scale = _finite(get("scale", (int, float)), "scale", 0.0, _F32_MAX / (qmax - qmin) / 2)
    if not np.float32(scale) > 0:
        raise ProtocolError("decode", f"{encoding} scale should be positive, got {scale!r}")
    zero_point = int(get("zero_point", int))
    if not qmin <= zero_point <= qmax:
        raise ProtocolError(
            "decode", f"{encoding} zero point {zero_point} is outside [{qmin}, {qmax}]"
        )
    if encoding == "int4" and math.prod(shape) % 2 and data[-1] >> 4:
        raise ProtocolError("decode", "int4 padding bits (the last byte's high four) not 0")
    return scale, zero_point


def _check_frame(encoding: str, split_block: int, shape: list[int], data: bytes) -> None:
    """A frame offload's JPEG, checked from its header: the size it declares must be the
    message's shape, each side within MAX_FRAME_SIDE, so decoding it cannot allocate more."""
    from shared.jpeg import MAX_FRAME_SIDE, JpegError, jpeg_dimensions

    if encoding != FRAME_ENCODING or split_block != FRAME_BLOCK:
        raise ProtocolError(
            "decode",
            f"a frame offload has split_block {FRAME_BLOCK} and encoding {FRAME_ENCODING!r}, "
            f"got split_block {split_block} and {encoding!r}",
        )
    if len(shape) != 3 or shape[2] != 3 or max(shape[:2]) > MAX_FRAME_SIDE:
        raise ProtocolError(
            "decode",
            f"frame shape {shape} should be [height, width, 3], each side at most {MAX_FRAME_SIDE}",
        )
    try:
        declared = jpeg_dimensions(data)
    except JpegError as exc:
        raise ProtocolError("decode", f"frame: {exc}") from None
    if list(declared) != shape:
        raise ProtocolError(
            "decode", f"frame JPEG declares {list(declared)}, the message says {shape}"
        )


def decode_reply(payload: bytes, *, max_bytes: int = 64 * 1024) -> Reply:
    body = _unpack(payload, max_bytes, (REPLY_VERSION,))
    frame_id = body.get("frame_id")
    if frame_id is not None and (type(frame_id) is not int or frame_id < 0):
        raise ProtocolError(
            "decode", f"frame_id should be a non-negative integer, got {frame_id!r}"
        )
    worker_id = _id(body, "worker_id", "worker id")
    if "error" in body:
        err = _get(body, "error", dict)
        kind = _get(err, "kind", str, "error")
        message = _get(err, "message", str, "error")
        return Reply(frame_id, worker_id, error=ReplyError(kind[:64], message[:1024]))
    if frame_id is None:
        raise ProtocolError("decode", "a reply without an error needs a frame_id")
    label = _get(body, "label", int)
    if label < 0:
        raise ProtocolError("decode", f"label should be >= 0, got {label}")
    return Reply(
        frame_id=frame_id,
        worker_id=worker_id,
        label=label,
        confidence=_finite(_get(body, "confidence", (int, float)), "confidence", 0.0, 1.0),
        cloud_ms=_finite(_get(body, "cloud_ms", (int, float)), "cloud_ms", 0.0),
        exits=_exits(body.get("exits", [])),
    )


def _exits(raw: Any) -> tuple[ExitAnswer, ...]:
    """A reply's ``exits``: at most one per block, blocks rising, each ``[block, label,
    confidence]``; anything else is a decode error (a release before them sends none)."""
    if not isinstance(raw, list) or len(raw) > NUM_BLOCKS:
        raise ProtocolError("decode", f"exits should be a list of at most {NUM_BLOCKS} entries")
    out: list[ExitAnswer] = []
    for entry in raw:
        if not (isinstance(entry, list) and len(entry) == 3):
            raise ProtocolError("decode", f"an exit is [block, label, confidence], got {entry!r}")
        block, label, conf = entry
        if not (type(block) is int and type(label) is int and label >= 0):
            raise ProtocolError("decode", f"an exit's block and label are integers, got {entry!r}")
        if not 0 < block < NUM_BLOCKS or (out and block <= out[-1].block):
            raise ProtocolError("decode", f"exit blocks rise within 1..{NUM_BLOCKS - 1}: {block}")
        if isinstance(conf, bool) or not isinstance(conf, int | float):
            raise ProtocolError("decode", f"an exit's confidence is a number, got {conf!r}")
        out.append(ExitAnswer(block, label, _finite(conf, "exits confidence", 0.0, 1.0)))
    return tuple(out)


def decode_result(payload: bytes) -> Result:
    """Read a result back (for apps and tests); refuses anything but the documented keys."""
    try:
        body = json.loads(payload)
        result = Result(**body)
    except (ValueError, TypeError) as exc:
        raise ProtocolError("decode", f"not a result message ({exc})") from None
    if result.source not in SOURCES:
        raise ProtocolError("decode", f"source {result.source!r} should be one of {SOURCES}")
    return result
