"""Home Assistant MQTT discovery for a camera node. Pure logic: the messages, not the sending.

With ``ha_discovery = true`` the node publishes one retained **device-based** discovery config,
``<ha_prefix>/device/isplitee_<device>/config``, holding the device, the origin, the
availability (the node's status topic, so a dead node shows as unavailable) and every entity
under ``components``. Home Assistant's MQTT docs present this form (2024.11 on) next to the
older one config per entity (``<ha_prefix>/<component>/<node>/<object>/config``, which it keeps
supporting): one message per camera instead of one per entity, with the device and the
availability said once, and a camera appears or goes as a whole. Earlier releases of this node
published the per-entity form; :func:`migration_messages` moves those entities over the way the
docs prescribe (``{"migrate_discovery": true}`` on each old topic, then the device config,
then the old retained configs cleared), so their history and customisations are kept.

No entity reads the per-frame result topic (a recorder row per frame): the label, confidence and
the event binary sensors read the debounced ``state``, the image entity the ``snapshot``, the
split and offload rate ``stats``, the alpha number ``config``. The models below are the
schema (docs/protocol.md's key tables are generated from them; the tests check the messages
against them). https://www.home-assistant.io/integrations/mqtt/#mqtt-discovery
"""

from __future__ import annotations

import hashlib
import json
import re
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

from shared.protocol import Topics

__all__ = [
    "COMPONENT_MODELS",
    "LEGACY_ENTITIES",
    "DeviceDiscovery",
    "DeviceInfo",
    "Origin",
    "discovery_messages",
    "discovery_topic",
    "ha_status_topic",
    "legacy_topics",
    "migration_messages",
    "node_name",
]

LEGACY_ENTITIES = (
    ("sensor", "label"),
    ("sensor", "confidence"),
    ("sensor", "split"),
    ("sensor", "offload_rate"),
    ("number", "alpha"),
)
"""(component, object) of the per-entity configs earlier releases published."""

MIGRATE = json.dumps({"migrate_discovery": True})


class _Schema(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class _Entity(_Schema):
    unique_id: str = Field(description="`isplitee_<device>_<object>`, stable across releases")
    default_entity_id: str = Field(description="`<platform>.isplitee_<device>_<object>`")
    name: str = Field(description="the entity's name under the device")


class Sensor(_Entity):
    platform: Literal["sensor"] = Field(description="`sensor`")
    state_topic: str = Field(description="`state` (label, confidence) or `stats`")
    value_template: str = Field(description="the key of that JSON message it shows")
    json_attributes_topic: str | None = Field(
        None, description="the label's: `state`, whose keys become its attributes"
    )
    unit_of_measurement: str | None = Field(None, description="`%` for the offload rate")
    state_class: Literal["measurement"] | None = Field(None, description="numbers: `measurement`")
    icon: str | None = Field(None, description="the label's: `mdi:tag`")


class BinarySensor(_Entity):
    platform: Literal["binary_sensor"] = Field(description="`binary_sensor`, one per event label")
    state_topic: str = Field(description="`state`")
    value_template: str = Field(description="`ON` while the label is in `active_events`")
    payload_on: Literal["ON"] = Field(description="`ON`")
    payload_off: Literal["OFF"] = Field(description="`OFF`")


class Image(_Entity):
    platform: Literal["image"] = Field(description="`image` (absent with `snapshot = false`)")
    image_topic: str = Field(description="`snapshot`: the JPEG itself")
    content_type: Literal["image/jpeg"] = Field(description="`image/jpeg`")


class Number(_Entity):
    platform: Literal["number"] = Field(description="`number`: alpha")
    state_topic: str = Field(description="`config`")
    value_template: str = Field(description="`{{ value_json.alpha }}`")
    command_topic: str = Field(description="`set/alpha`")
    min: float = Field(description="0")
    max: float = Field(description="1")
    step: float = Field(description="0.01")
    mode: Literal["box"] = Field(description="`box`")
    entity_category: Literal["config"] = Field(description="`config`")


Component = Annotated[Sensor | BinarySensor | Image | Number, Field(discriminator="platform")]
COMPONENT_MODELS = (Sensor, BinarySensor, Image, Number)


class DeviceInfo(_Schema):
    identifiers: list[str] = Field(description="`[isplitee_<device>]`")
    name: str = Field(description="`isplitee <device>`")
    manufacturer: str = Field(description="`isplitee`")
    model: str = Field(description="`camera node (model <hash prefix>)`")
    sw_version: str = Field(description="the node's release")


class Origin(_Schema):
    name: str = Field(description="`isplitee`")
    sw_version: str = Field(description="the node's release")


class DeviceDiscovery(_Schema):
    """``<ha_prefix>/device/isplitee_<device>/config`` (retained JSON)."""

    device: DeviceInfo = Field(description="the camera, as Home Assistant's registry files it")
    origin: Origin = Field(description="what published this config (required by Home Assistant)")
    availability_topic: str = Field(description="the node's `status`: every entity's availability")
    payload_available: Literal["online"] = Field(description="`online`")
    payload_not_available: Literal["offline"] = Field(description="`offline`")
    qos: Literal[1] = Field(description="1")
    components: dict[str, Component] = Field(description="object id -> entity config")


_UNSAFE = re.compile(r"[^A-Za-z0-9_-]")
"""What discovery ids may not hold."""


def _safe(text: str) -> str:
    """``text`` in the character class discovery ids allow (each other character a ``_``)."""
    return _UNSAFE.sub("_", text)


def _event_object(label: str) -> str:
    """``event_<label>``: a name that is already safe keeps it; one that had to be changed gets
    a short hash of itself, so ``a b`` and ``a_b`` are two binary sensors, not one."""
    safe = _safe(label)
    if safe == label:
        return f"event_{label}"
    return f"event_{safe}_{hashlib.sha256(label.encode()).hexdigest()[:8]}"


def node_name(device_id: str) -> str:
    """``isplitee_<device>``: the device id in the character class discovery ids allow."""
    return "isplitee_" + _safe(device_id)


def discovery_topic(device_id: str, ha_prefix: str = "homeassistant") -> str:
    return f"{ha_prefix}/device/{node_name(device_id)}/config"


def ha_status_topic(ha_prefix: str = "homeassistant") -> str:
    """Where Home Assistant announces itself (``online`` at start): the node re-publishes."""
    return f"{ha_prefix}/status"


def _components(
    topics: Topics, device_id: str, *, snapshot: bool, event_labels: tuple[str, ...]
) -> dict[str, Component]:
    node = node_name(device_id)
    state, stats = topics.state(device_id), topics.stats(device_id)

    def ids(platform: str, obj: str) -> dict[str, str]:
        return {"unique_id": f"{node}_{obj}", "default_entity_id": f"{platform}.{node}_{obj}"}

    out: dict[str, Component] = {
        "label": Sensor(
            platform="sensor",
            **ids("sensor", "label"),
            name="Label",
            state_topic=state,
            value_template="{{ value_json.class_name }}",
            json_attributes_topic=state,
            icon="mdi:tag",
        ),
        "confidence": Sensor(
            platform="sensor",
            **ids("sensor", "confidence"),
            name="Confidence",
            state_topic=state,
            value_template="{{ value_json.confidence }}",
            state_class="measurement",
        ),
        "split": Sensor(
            platform="sensor",
            **ids("sensor", "split"),
            name="Split block",
            state_topic=stats,
            value_template="{{ value_json.split }}",
            state_class="measurement",
        ),
        "offload_rate": Sensor(
            platform="sensor",
            **ids("sensor", "offload_rate"),
            name="Offload rate",
            state_topic=stats,
            value_template="{{ (value_json.offload_rate * 100) | round(1) }}",
            unit_of_measurement="%",
            state_class="measurement",
        ),
        "alpha": Number(
            platform="number",
            **ids("number", "alpha"),
            name="Exit threshold (alpha)",
            state_topic=topics.config(device_id),
            value_template="{{ value_json.alpha }}",
            command_topic=topics.setting(device_id, "alpha"),
            min=0,
            max=1,
            step=0.01,
            mode="box",
            entity_category="config",
        ),
    }
    if snapshot:
        out["snapshot"] = Image(
            platform="image",
            **ids("image", "snapshot"),
            name="Snapshot",
            image_topic=topics.snapshot(device_id),
            content_type="image/jpeg",
        )
    for label in event_labels:
        obj = _event_object(label)
        out[obj] = BinarySensor(
            platform="binary_sensor",
            **ids("binary_sensor", obj),
            name=f"Event {label}",
            state_topic=state,
            # a JSON string is a Jinja string literal too: any class name is quoted safely
            value_template=f"{{{{ 'ON' if {json.dumps(label)} in value_json.active_events "
            "else 'OFF' }}",
            payload_on="ON",
            payload_off="OFF",
        )
    return out


def discovery_messages(
    topics: Topics,
    device_id: str,
    *,
    ha_prefix: str = "homeassistant",
    model_hash: str = "",
    sw_version: str = "",
    snapshot: bool = True,
    event_labels: tuple[str, ...] = (),
) -> list[tuple[str, str]]:
    """(topic, JSON payload) of the discovery config, to be published retained."""
    node = node_name(device_id)
    config = DeviceDiscovery(
        device=DeviceInfo(
            identifiers=[node],
            name=f"isplitee {device_id}",
            manufacturer="isplitee",
            model=f"camera node (model {model_hash[:12]})" if model_hash else "camera node",
            sw_version=sw_version,
        ),
        origin=Origin(name="isplitee", sw_version=sw_version),
        availability_topic=topics.status(device_id),
        payload_available="online",
        payload_not_available="offline",
        qos=1,
        components=_components(
            topics, device_id, snapshot=snapshot, event_labels=tuple(event_labels)
        ),
    )
    body = config.model_dump_json(exclude_none=True)
    return [(discovery_topic(device_id, ha_prefix), body)]


def legacy_topics(device_id: str, ha_prefix: str = "homeassistant") -> list[str]:
    """The per-entity config topics of earlier releases."""
    node = node_name(device_id)
    return [f"{ha_prefix}/{c}/{node}/{obj}/config" for c, obj in LEGACY_ENTITIES]


def migration_messages(
    device_id: str, ha_prefix: str = "homeassistant"
) -> tuple[list[tuple[str, str]], list[str]]:
    """Home Assistant's migration from per-entity to device discovery: the markers to send
    (not retained) to the old topics before the device config, and the old topics to clear
    (an empty retained message) after it. Harmless where nothing was published before."""
    old = legacy_topics(device_id, ha_prefix)
    return [(t, MIGRATE) for t in old], old
