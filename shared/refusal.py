"""What to tell a user whose topics the broker refused. Pure logic: text, no I/O.

Mosquitto accepts an account's connection and then refuses, one by one, the publishes its ACL
does not allow (an MQTT v5 PUBACK with reason "Not authorized"). The commonest cause is a node
started with a ``--device-id`` other than its account name: the ACL of
``deploy/broker-setup.sh`` confines each node account to ``<prefix>/<its name>/...``. The line
built here names the topic, the account and the fix, so the program can stop with it.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["Refusal", "discovery_advice", "node_advice", "undelivered_advice", "worker_advice"]


@dataclass(frozen=True)
class Refusal:
    topic: str
    reason: str  # the broker's reason code, e.g. "Not authorized"
    access: str = "publish"  # or "subscribe"


def _who(user: str | None) -> str:
    return f"account {user!r}" if user else "an anonymous client"


def _first(refusals: list[Refusal], broker: str, user: str | None) -> str:
    first = refusals[0]
    more = f" (and {len(refusals) - 1} more topics)" if len(refusals) > 1 else ""
    return (
        f"the broker at {broker} refused {_who(user)} a {first.access} on {first.topic}"
        f" ({first.reason}){more}"
    )


def _another_accounts(head: str, user: str, wanted: str, role: str, may: str) -> str:
    """A program logged in as one account under another's id: both ways out."""
    return (
        f"{head}: each {role} account may {may}; run with --{'device' if role == 'node' else role}"
        f"-id {user}, or give {wanted} an account of its own (deploy/broker-setup.sh"
        f" add-{role} DIR {wanted}, then systemctl reload mosquitto) and log in as it"
    )


def node_advice(refusals: list[Refusal], *, broker: str, user: str | None, device_id: str) -> str:
    """One line for a node whose own topics were refused at start."""
    head = _first(refusals, broker, user)
    if user and user != device_id:
        return _another_accounts(head, user, device_id, "node", "use only the topics of its own id")
    if not user:
        return (
            f"{head}: this broker wants an account per node; create one"
            f" (deploy/broker-setup.sh add-node DIR {device_id}) and set username"
            " (ISPLITEE_USERNAME) and ISPLITEE_PASSWORD"
        )
    return (
        f"{head}: the broker's ACL does not give node accounts this topic; install"
        " broker_config/acl (deploy/broker-setup.sh init DIR) or add the node patterns to"
        " yours, then reload Mosquitto (systemctl reload mosquitto)"
    )


def worker_advice(refusals: list[Refusal], *, broker: str, user: str | None, worker_id: str) -> str:
    """One line for a worker whose subscription or status topic was refused at start."""
    head = _first(refusals, broker, user)
    if user and user != worker_id:
        return _another_accounts(head, user, worker_id, "worker", "write only its own status")
    return (
        f"{head}: a worker account reads <prefix>/+/activation and writes replies and its"
        f" status; create it with deploy/broker-setup.sh add-worker DIR {user or worker_id}, then"
        " reload Mosquitto (systemctl reload mosquitto)"
    )


def undelivered_advice(topic: str, *, broker: str, user: str | None) -> str:
    """One line for a worker the broker lets subscribe but never delivers activations to."""
    who = f"account {user!r}" if user else "an anonymous client"
    return (
        f"the broker at {broker} does not deliver activations to {who}: its check message on"
        f" {topic} never came back, so the ACL lacks `topic read <prefix>/+/activation` for it"
        " (Mosquitto grants the subscription, then drops each message: a worker without it"
        " would swallow its share of every node's offloads); create the account with"
        " deploy/broker-setup.sh add-worker DIR ID, then reload Mosquitto"
    )


def discovery_advice(
    refusals: list[Refusal], *, broker: str, user: str | None, ha_prefix: str = "homeassistant"
) -> str:
    """A warning (the node runs on without Home Assistant) for refused discovery configs."""
    head = _first(refusals, broker, user)
    return (
        f"{head}: Home Assistant will not see this camera; add the lines"
        f" `pattern write {ha_prefix}/device/isplitee_%u/config` and"
        f" `pattern write {ha_prefix}/+/isplitee_%u/+/config` (as in broker_config/acl) to the"
        " broker's ACL (an ACL from an older deploy/broker-setup.sh init lacks them), then"
        " reload Mosquitto (systemctl reload mosquitto)"
    )
