"""Every key of a node's stats message, with its meaning: the one list docs/protocol.md is
generated from (``python deploy/examples.py``) and a real node's message is checked against
(tests/test_pipeline.py), so the page cannot drift from what nodes publish. Pure data.
"""

from __future__ import annotations

__all__ = ["STATS_FIELDS"]

STATS_FIELDS: dict[str, str] = {
    "device_id": "the node's device id",
    "frames": "frames processed since start",
    "fps": "frames per second since start",
    "dropped": "frames a live source dropped because the node was busy",
    "split": "the current split block (null before the first decision)",
    "results": "results published, by source: `edge`, `cloud`, `fallback`",
    "exit_rate": "share of results answered at the edge",
    "offload_rate": "share of frames whose activation or frame was sent to the cloud",
    "frame_offloads": "offloads that sent the frame itself as a JPEG (split block 0), whether "
    "the policy chose the frame arm or an unsure exit found the frame cheaper to send",
    "fallback_rate": "share of results that fell back (no reply in time, or an error reply)",
    "audit_rate": "share of frames sent to the cloud although the exit was confident, to check "
    "the exit (audited policies)",
    "bytes_sent": "bytes of the activations and frames offloaded",
    "pending": "offloads awaiting a reply",
    "late_replies": "replies that came after their frame had fallen back",
    "reoffloads": "offloads sent again after a reply timeout (`reoffloads` setting)",
    "errors": "offloads that fell back, by kind (`timeout` included, and each error reply kind)",
    "settings_refused": "runtime settings refused since start",
    "settings_error": "the reason for the refusal, in the message published at once after it "
    "(null in every other)",
    "arms": "per arm: block, count and estimated reward of the bandit, exit rate and "
    "confidence; with an audited policy also `agreement` with the final classifier, `trusted`, "
    "and `threshold`, the confidence at which that exit answers",
    "costs": (
        "what the policy prices each arm at now, in paper units (the whole network's run on the "
        "node costs 1.9): `edge`, the node's time to reach the arm plus what its frames waited "
        "beyond their timed parts (`device/costs.py`), and `offload`, the round trip from it"
    ),
    "publish_dropped": "messages dropped because more than 10,000 were queued while the broker "
    "was unreachable",
    "publish_refused": "publishes the broker refused (its ACL), by topic kind, e.g. "
    '`{"result": 12}`',
    "events": "label events started since start (`<prefix>/<device>/events`)",
    "snapshots": "snapshots published since start (`<prefix>/<device>/snapshot`)",
    "snapshot_bytes": "bytes of those snapshots' JPEGs",
    "snapshots_missed": "snapshots not sent because their frame was no longer kept (should stay "
    "0; more means results came over `max_pending` + 4 frames after their frames)",
    "uptime_s": "seconds since start",
    "model_hash": "content hash of the model the node runs",
}
