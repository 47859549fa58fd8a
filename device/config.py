"""The camera node's settings (``device.toml``, ``ISPLITEE_*``, flags).

Defaults are the setting we recommend for a camera that sees changing scenes, not the paper's:
see docs/results.md for the measurements behind alpha and the policy.
"""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator

from shared.config import ConfigError, ProgramSettings, split_list
from shared.policy import find_spec, listing
from shared.protocol import validate_id
from shared.wire import WIRE_CHOICES

__all__ = ["RECOMMENDED_ALPHA", "DeviceConfig", "check_event_labels"]

RECOMMENDED_ALPHA = 0.8
"""Exit threshold the results page recommends (the paper's 0.5 trusts noisy exits too much)."""


def _default_device_id() -> str:
    host = "".join(c if c.isalnum() or c in "-_" else "-" for c in socket.gethostname())
    return (host or "camera")[:64]


class DeviceConfig(ProgramSettings):
    """A camera node: where frames come from, the model, the policy and the offload rules."""

    model: Path = Field(
        description="The model: its deploy artefact (MODEL.isplitee, from isplitee export or "
        "train; runs without torch) or, where torch is installed, its checkpoint (.pt). The "
        "workers serve the same model, as either file."
    )
    device_id: str = Field(
        default_factory=_default_device_id,
        description="Names this camera in every topic (default: the host name).",
    )
    source: str = Field(
        "0",
        description="Camera index, video file, rtsp:// or http:// URL, image folder, or picamera2.",
    )
    fps: float | None = Field(None, gt=0, description="Most frames per second (default: all).")
    max_frames: int | None = Field(
        None, ge=1, description="Stop after this many frames, once each has its result."
    )
    policy: str = Field(
        "isplitee",
        description="isplitee (audited: exits answer only while audits show they agree with "
        "the cloud) | isplitee-nonstationary | isplitee-paper (the paper's rule, trusts "
        "confidence) | isplitee-paper-nonstationary | offload-all | fixed:BLOCK | final | random.",
    )
    alpha: float = Field(
        RECOMMENDED_ALPHA, ge=0, le=1, description="Exit threshold on an exit's confidence."
    )
    mu: float = Field(1.0, ge=0, description="Weight of cost against confidence in the reward.")
    c: float | None = Field(None, ge=0, description="Exploration (default: the policy's own).")
    discount: float | None = Field(
        None, gt=0, lt=1, description="Memory of the -nonstationary policies (default: their own)."
    )
    target: float | None = Field(
        None,
        gt=0,
        lt=1,
        description="Audited policies: the largest share of frames an exit may answer "
        "differently from the final classifier (default: the policy's own, 0.02).",
    )
    min_audit_rate: float | None = Field(
        None,
        ge=0,
        le=1,
        description="Audited policies: the least share of frames sent to the cloud to check "
        "the exits (default: the policy's own, 0.05).",
    )
    encoding: Literal["auto", "fp32", "fp16", "int8", "int4"] = Field(
        "auto",
        description=f"Activation encoding on the wire: {', '.join(WIRE_CHOICES)}. auto: per "
        "split, the smallest encoding the checkpoint's held-out images tolerated (fp16 for a "
        "checkpoint without that check).",
    )
    cost: Literal["measured", "paper"] = Field(
        "measured",
        description="measured: this node's own compute and round-trip times; paper: the "
        "paper's constants (0.1 per block, 0.5 per offload).",
    )
    frame_offload: bool = Field(
        True,
        description="Measured cost only: the policy may send the frame itself as a JPEG (split "
        "block 0, no block run on the node), and an unsure exit sends the frame instead of "
        "its activation where that is cheaper. docs/testbed.md shows when it pays.",
    )
    jpeg_quality: int = Field(90, ge=1, le=100, description="JPEG quality of frame offloads.")
    link_mbps: float = Field(10.0, gt=0, description="Prior uplink rate until offloads are timed.")
    rtt_ms: float = Field(20.0, ge=0, description="Prior round trip until offloads are timed.")
    cost_smoothing: float = Field(
        0.2, gt=0, le=1, description="Weight of the newest timing in the live cost estimates."
    )
    probe_interval_s: float = Field(
        5.0,
        gt=0,
        description="How often the node times an offload-sized round trip through the broker "
        "(measured cost only), so it notices a link that slowed down or recovered even while "
        "it is not offloading. Every other probe times the frame's JPEG (whose round trip "
        "prices an unsure exit's offload at every split), the others take the splits in turn; "
        "at start-up and after an outage every split is timed once, one probe at a time "
        "(`device/probing.py`). While the node runs its network rather than send frames, it "
        "holds its next frame while the frame's probe is out, so the probe is not timed behind "
        "the node's own busy CPU.",
    )
    reply_timeout_s: float = Field(
        2.0,
        gt=0,
        description="Wait this long for the cloud's reply before re-offloading or falling back.",
    )
    reoffloads: int = Field(
        1,
        ge=0,
        le=5,
        description="Times an unanswered offload is sent again (a worker may have died "
        "holding it) before the node falls back on its exit's answer.",
    )
    max_pending: int = Field(
        8, ge=1, le=1000, description="Offloads awaiting a reply before the node waits."
    )
    state: Path | None = Field(None, description="Bandit state file, restored at start.")
    state_interval_s: float = Field(10.0, gt=0, description="How often the state is saved.")
    stats_interval_s: float = Field(5.0, gt=0, description="How often stats are published.")
    seed: int = Field(0, description="Seed of the random policy.")
    ha_discovery: bool = Field(
        False,
        description="Publish Home Assistant MQTT discovery (retained) at start and whenever Home "
        "Assistant comes online, so the camera shows up as a device with its label, "
        "confidence, snapshot, split and offload rate.",
    )
    ha_prefix: str = Field("homeassistant", description="Home Assistant's discovery prefix.")
    min_frames: int = Field(
        3,
        ge=1,
        le=1000,
        description="A label becomes the camera's state (<prefix>/<device>/state) and starts "
        "an event once this many answers in a row give it with at least min_confidence.",
    )
    hold_s: float = Field(
        5.0,
        gt=0,
        description="The state goes to none after this many seconds without a confident "
        "answer agreeing with its label.",
    )
    state_min_interval_s: float = Field(
        1.0,
        ge=0,
        description="Least seconds between two state messages: a change that comes sooner "
        "waits, and the newest state goes out when the time is up.",
    )
    min_confidence: float = Field(
        0.6,
        ge=0,
        le=1,
        description="Answers below this confidence count toward no state and no event.",
    )
    event_labels: list[str] = Field(
        [],
        description="Class names that raise events, each with a Home Assistant binary sensor "
        "(on while its event is open); empty: every label raises events, and no binary "
        "sensors. Each must be one of the model's class names (checked at start). As "
        "ISPLITEE_EVENT_LABELS: comma-separated names, or a JSON list.",
    )
    end_s: float = Field(
        5.0, gt=0, description="An event ends after this many seconds without its label."
    )
    snapshot: bool = Field(
        True,
        description="Publish each event's best frame as a JPEG on <prefix>/<device>/snapshot "
        "(retained); false for bandwidth-tight links (events still name the frame; a snapshot "
        "an earlier run left retained is cleared at start).",
    )
    snapshot_annotate: bool = Field(
        True, description="Draw the label and its confidence on the snapshot."
    )
    snapshot_size: int = Field(
        480,
        ge=32,
        le=4096,
        description="Longest side of the snapshot in pixels (the frame is scaled to it).",
    )
    snapshot_quality: int = Field(80, ge=1, le=100, description="JPEG quality of snapshots.")
    snapshot_max_fps: float = Field(
        1.0,
        gt=0,
        le=30,
        description="Most snapshots per second, over all events: a better frame that comes "
        "sooner waits, and the best by then is sent.",
    )

    @field_validator("event_labels", mode="before")
    @classmethod
    def _event_labels(cls, value: object) -> object:
        return split_list(value)

    @field_validator("device_id")
    @classmethod
    def _device_id(cls, value: str) -> str:
        return validate_id(value, "device id")

    @field_validator("policy")
    @classmethod
    def _policy(cls, value: str) -> str:
        try:
            _, block = find_spec(value)
        except ValueError:
            block = ""
        if block is not None and not block.isdecimal():  # the model checks BLOCK at start
            raise ValueError(
                f"should be {listing()} (BLOCK one of the model's exit blocks, e.g. fixed:6)"
            )
        return value


def check_event_labels(labels: list[str], class_names: tuple[str, ...]) -> None:
    """``event_labels`` against the model's class names, once the model is loaded: a name it
    does not have would give an event (and a Home Assistant binary sensor) that never comes."""
    unknown = [name for name in labels if name not in class_names]
    if unknown:
        raise ConfigError(
            f"invalid configuration: event_labels: {', '.join(map(repr, unknown))} "
            f"{'is not a class' if len(unknown) == 1 else 'are not classes'} of the model; "
            f"its classes are {', '.join(class_names)}"
        )
