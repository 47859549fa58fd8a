"""The cloud worker's settings (``cloud.toml``, ``ISPLITEE_*``, flags)."""

from __future__ import annotations

import os
import socket
from pathlib import Path

from pydantic import Field, field_validator

from shared.config import ProgramSettings, split_list
from shared.protocol import MAX_PAYLOAD_BYTES, validate_id

__all__ = ["WorkerConfig"]


def _default_worker_id() -> str:
    host = "".join(c if c.isalnum() or c in "-_" else "-" for c in socket.gethostname())
    return f"{host or 'worker'}-{os.getpid()}"[:64]


class WorkerConfig(ProgramSettings):
    """A cloud worker: which checkpoints it serves and how it batches."""

    models: list[Path] = Field(
        min_length=1,
        description="Models to serve, artefacts (MODEL.isplitee) or, where torch is installed, "
        "checkpoints (.pt); each activation is matched to one by its model hash. As "
        "ISPLITEE_MODELS: comma-separated paths, or a JSON list.",
    )
    worker_id: str = Field(
        default_factory=_default_worker_id,
        description="Names this worker in replies and on its status topic (default host-pid).",
    )
    group: str = Field(
        "isplitee", description="Shared-subscription group: workers of one group split the load."
    )
    max_batch: int = Field(16, ge=1, le=1024, description="Most activations run as one batch.")
    max_wait_ms: float = Field(
        0.0,
        ge=0,
        le=1000,
        description="Longest an activation waits for others to join its batch. 0: run as soon "
        "as nothing more is waiting, so batches form from what arrives while the previous one "
        "runs and a lone node pays nothing for batching.",
    )
    max_payload_bytes: int = Field(
        MAX_PAYLOAD_BYTES, ge=1024, description="Larger messages are refused with an error reply."
    )
    queue_size: int = Field(
        1000,
        ge=1,
        description="Received activations waiting for the worker; past it each is answered at "
        "once with an `overloaded` error (its node falls back) instead of queueing.",
    )

    @field_validator("models", mode="before")
    @classmethod
    def _models(cls, value: object) -> object:
        return split_list(value)

    @field_validator("worker_id")
    @classmethod
    def _worker_id(cls, value: str) -> str:
        return validate_id(value, "worker id")

    @field_validator("group")
    @classmethod
    def _group(cls, value: str) -> str:
        return validate_id(value, "group")
