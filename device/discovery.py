"""Home Assistant MQTT discovery for a camera node. Pure logic: the messages, not the sending.

With ``ha_discovery = true`` the node publishes, retained, one discovery config per entity under
``<ha_prefix>/<component>/isplitee_<device>/<object>/config``; Home Assistant then shows the
camera as a device with its last label (the whole result as attributes), confidence, split and
offload rate, and a number entity to set alpha. Every entity's availability is bound to the
node's status topic, so a node that dies (its MQTT will publishes ``offline``) shows as
unavailable. See https://www.home-assistant.io/integrations/mqtt/#mqtt-discovery.
"""

from __future__ import annotations

import json
import re

from shared.protocol import Topics

__all__ = ["discovery_messages"]


def discovery_messages(
    topics: Topics,
    device_id: str,
    *,
    ha_prefix: str = "homeassistant",
    model_hash: str = "",
    sw_version: str = "",
) -> list[tuple[str, str]]:
    """(topic, JSON payload) of every discovery config, to be published retained."""
    node = "isplitee_" + re.sub(r"[^A-Za-z0-9_-]", "_", device_id)
    device = {
        "identifiers": [node],
        "name": f"isplitee {device_id}",
        "manufacturer": "isplitee",
        "model": f"camera node (model {model_hash[:12]})" if model_hash else "camera node",
        "sw_version": sw_version,
    }
    common = {
        "availability_topic": topics.status(device_id),
        "payload_available": "online",
        "payload_not_available": "offline",
        "device": device,
    }
    result, stats = topics.result(device_id), topics.stats(device_id)
    entities = [
        (
            "sensor",
            "label",
            {
                "name": "Last label",
                "state_topic": result,
                "value_template": "{{ value_json.class_name }}",
                "json_attributes_topic": result,
                "icon": "mdi:tag",
            },
        ),
        (
            "sensor",
            "confidence",
            {
                "name": "Confidence",
                "state_topic": result,
                "value_template": "{{ value_json.confidence }}",
                "state_class": "measurement",
            },
        ),
        (
            "sensor",
            "split",
            {
                "name": "Split block",
                "state_topic": stats,
                "value_template": "{{ value_json.split }}",
                "state_class": "measurement",
            },
        ),
        (
            "sensor",
            "offload_rate",
            {
                "name": "Offload rate",
                "state_topic": stats,
                "value_template": "{{ (value_json.offload_rate * 100) | round(1) }}",
                "unit_of_measurement": "%",
                "state_class": "measurement",
            },
        ),
        (
            "number",
            "alpha",
            {
                "name": "Exit threshold (alpha)",
                "state_topic": topics.config(device_id),
                "value_template": "{{ value_json.alpha }}",
                "command_topic": topics.setting(device_id, "alpha"),
                "min": 0,
                "max": 1,
                "step": 0.01,
                "mode": "box",
                "entity_category": "config",
            },
        ),
    ]
    out = []
    for component, obj, fields in entities:
        body = {**fields, "unique_id": f"{node}_{obj}", "object_id": f"{node}_{obj}", **common}
        out.append((f"{ha_prefix}/{component}/{node}/{obj}/config", json.dumps(body)))
    return out
