"""The deploy artefact: one file a node and a worker run without torch.

Training writes a PyTorch checkpoint; a Raspberry Pi cannot afford torch (about 700 MB resident
for ``import torch`` alone). ``isplitee export`` turns the checkpoint into this file: a zip
archive (stored, not compressed: the graphs are float weights) holding

* ``isplitee.json``: the manifest (:class:`Manifest`): the checkpoint's metadata and **content
  hash** (so a node on the artefact and a worker on the ``.pt`` interoperate, and mismatches
  are refused as between two checkpoints), every block's compute and activation shape, and the
  SHA-256 of every graph;
* ``blocks-<a>-<b>.onnx``, one per **segment** between consecutive arms (blocks 1-3, 4-6, ...,
  19-19 with the default exits): input ``input``, outputs ``activation`` (block b's output) and
  ``logits`` (the exit at b, or the final classifier after block 19), batch axis free.

A split's edge half is the chain of the segments up to it (the exits on the way come out of the
segments they end), its cloud half the chain of the segments after it (their exits unread):
:class:`Chain` runs both. One graph per segment, not per split, keeps every weight in the file,
and in the memory of a node or worker, once: a per-split layout held the backbone's first blocks
seven times over and made the artefact seven times the checkpoint.

No pickle anywhere: JSON and ONNX protobufs. Loading checks the archive, the manifest, each
graph's checksum, and (when a graph is opened) its inputs and outputs against the metadata; any
failure is one :class:`ArtefactError` naming the file. Writing is atomic. This module has no
torch: the graphs are made and checked against PyTorch by :mod:`shared.lab.export`.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from shared.errors import IsplitEEError
from shared.meta import ModelMeta
from shared.profile import ModelProfile

__all__ = [
    "CHECK_IMAGES",
    "FORMAT",
    "FORMAT_VERSION",
    "MANIFEST",
    "SUFFIX",
    "Artefact",
    "ArtefactError",
    "Chain",
    "Manifest",
    "graph_names",
    "is_artefact",
    "load_artefact",
    "segments",
    "write_artefact",
]

FORMAT = "isplitee.artefact"
FORMAT_VERSION = 1
MANIFEST = "isplitee.json"
SUFFIX = ".isplitee"
"""What ``isplitee export`` and ``isplitee train`` name the artefact beside its checkpoint."""

CHECK_IMAGES = 200
"""Held-out images the export checks each graph on against PyTorch (the first of the
checkpoint's test split)."""

_HEX64 = re.compile(r"[0-9a-f]{64}")


class ArtefactError(IsplitEEError):
    """An artefact cannot be used; the message names the file and the problem."""


class GraphEntry(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    size: int = Field(ge=1, description="Bytes of the graph file.")


class Manifest(BaseModel):
    """``isplitee.json``: everything about the artefact except the graphs themselves."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    format: Literal["isplitee.artefact"]
    format_version: int
    model_hash: str = Field(pattern=r"^[0-9a-f]{64}$", description="The checkpoint's hash.")
    meta: ModelMeta
    profile: dict[str, Any] = Field(description="ModelProfile.to_dict() at the input size.")
    graphs: dict[str, GraphEntry]
    checked: dict[str, Any] = Field(
        default_factory=dict,
        description="What the export checked against PyTorch: images, largest differences.",
    )
    exported_with: dict[str, str] = Field(default_factory=dict, description="Tool versions.")


def segments(meta: ModelMeta) -> list[tuple[int, int]]:
    """(first block, last block) of every segment, in order: one per arm."""
    starts = (0, *meta.arm_blocks[:-1])
    return [(a + 1, b) for a, b in zip(starts, meta.arm_blocks, strict=True)]


def graph_names(meta: ModelMeta) -> list[str]:
    """The graphs an artefact of ``meta`` holds, in the order they run."""
    return [f"blocks-{a}-{b}" for a, b in segments(meta)]


class Chain:
    """Both halves of every split, run as chains of segment sessions."""

    def __init__(self, meta: ModelMeta, sessions: dict[int, Any]) -> None:
        self.arm_blocks = meta.arm_blocks
        self._sessions = sessions  # last block of the segment -> its session

    def edge(self, x: Any, block: int) -> tuple[Any, list[Any]]:
        """(activation at ``block``, logits of every exit up to it) for a batch of inputs."""
        logits = []
        for b in self.arm_blocks[: self.arm_blocks.index(block) + 1]:
            x, exit_logits = self._sessions[b].run(None, {"input": x})
            logits.append(exit_logits)
        return x, logits

    def cloud(self, activation: Any, block: int) -> Any:
        """The final classifier's logits from a batch of activations at ``block`` (block 0:
        of inputs, the whole network)."""
        return self.cloud_exits(activation, block)[0]

    def cloud_exits(self, activation: Any, block: int) -> tuple[Any, list[Any]]:
        """(the final classifier's logits, the logits of every exit after ``block``): the
        segments give both, so the exits cost nothing more."""
        x, logits, exits = activation, None, []
        first = 0 if block == 0 else self.arm_blocks.index(block) + 1
        for b in self.arm_blocks[first:]:
            if logits is not None:
                exits.append(logits)
            x, logits = self._sessions[b].run(None, {"input": x})
        return logits, exits


class Artefact:
    """A loaded artefact: metadata, hash and profile in memory; graphs read when opened."""

    def __init__(self, path: Path, manifest: Manifest, profile: ModelProfile) -> None:
        self.path = path
        self.manifest = manifest
        self.meta = manifest.meta
        self.hash = manifest.model_hash
        self.profile = profile

    @property
    def short_hash(self) -> str:
        return self.hash[:12]

    def graph(self, name: str) -> bytes:
        """The bytes of graph ``name`` (``blocks-1-3``, ...), checksum verified."""
        entry = self.manifest.graphs.get(name)
        if entry is None:
            raise ArtefactError(f"{self.path}: holds no graph {name!r}")
        return _read_graph(self.path, name, entry)

    def open_chain(self, threads: int | None = None, *, after: int = 0, **options: Any) -> Chain:
        """Sessions for every segment past block ``after`` (0: all of them), each checked
        against the metadata; ``options`` go to :func:`shared.runtime.session`."""
        sessions = {
            b: self.open_session(name, threads, **options)
            for (a, b), name in zip(segments(self.meta), graph_names(self.meta), strict=True)
            if a > after
        }
        return Chain(self.meta, sessions)

    def open_session(self, name: str, threads: int | None = None, **options: Any) -> Any:
        """An ONNX Runtime session for graph ``name``, its inputs and outputs checked against
        the metadata (a graph that does not fit is an error naming the file and the graph)."""
        from shared.runtime import session

        try:
            sess = session(self.graph(name), threads, **options)
        except ArtefactError:
            raise
        except Exception as exc:  # ONNX Runtime's own parse/validation errors
            raise ArtefactError(
                f"{self.path}: graph {name} cannot be loaded by ONNX Runtime ({exc}); the file "
                "is corrupted or was written by a newer isplitee"
            ) from exc
        problem = _io_problem(sess, name, self.meta, self.profile)
        if problem:
            raise ArtefactError(f"{self.path}: graph {name} does not match its metadata: {problem}")
        return sess


def _dims(shape: list[Any]) -> list[Any]:
    """A shape as ONNX Runtime reports it: ints, or names/None for free axes."""
    return [d if isinstance(d, int) else None for d in shape]


def _io_problem(sess: Any, name: str, meta: ModelMeta, profile: ModelProfile) -> str | None:
    _, first, last = name.split("-")
    a, b = int(first), int(last)
    ins, outs = sess.get_inputs(), sess.get_outputs()
    before = (3, meta.input_size, meta.input_size) if a == 1 else profile.block(a - 1).out_shape
    want_in = [None, *before]
    want_out = [[None, *profile.block(b).out_shape], [None, meta.num_classes]]
    got_in = [_dims(i.shape) for i in ins]
    got_out = [_dims(o.shape) for o in outs]
    if got_in != [want_in]:
        return f"input {got_in} where the metadata gives {[want_in]}"
    if got_out != want_out:
        return f"outputs {got_out} where the metadata gives {want_out}"
    return None


def _read_graph(path: Path, name: str, entry: GraphEntry) -> bytes:
    try:
        with zipfile.ZipFile(path) as z:
            data = z.read(f"{name}.onnx")
    except KeyError:
        raise ArtefactError(f"{path}: graph {name}.onnx is listed but missing") from None
    except (zipfile.BadZipFile, OSError, RuntimeError, NotImplementedError) as exc:
        # zipfile's own words for a damaged entry: bad CRC, an unknown compression method or
        # an encryption flag set by a flipped bit
        raise ArtefactError(
            f"{path}: cannot read graph {name}.onnx ({exc}): the file is corrupted; copy or "
            "export it again"
        ) from exc
    if len(data) != entry.size or hashlib.sha256(data).hexdigest() != entry.sha256:
        raise ArtefactError(
            f"{path}: graph {name}.onnx does not match its checksum: the file is corrupted or "
            "was altered; export it again (isplitee export MODEL.pt)"
        )
    return data


def is_artefact(path: Path) -> bool:
    """Whether ``path`` is meant as an artefact: its suffix, or a zip holding a manifest."""
    if path.suffix == SUFFIX:
        return True
    try:
        with zipfile.ZipFile(path) as z:
            return MANIFEST in z.namelist()
    except (zipfile.BadZipFile, OSError):
        return False


def _describe(exc: ValidationError) -> str:
    first = exc.errors()[0]
    where = ".".join(str(p) for p in first["loc"]) or "(top level)"
    more = f" (and {exc.error_count() - 1} more)" if exc.error_count() > 1 else ""
    return f"{where}: {first['msg']}{more}"


def load_artefact(path: str | Path, *, expected_hash: str | None = None) -> Artefact:
    """Read and check an artefact: archive, manifest, the set of graphs and every checksum.

    Raises:
        ArtefactError: missing, truncated, corrupted, altered or foreign file; a format version
            this release does not read; graphs missing or extra; another hash than
            ``expected_hash`` (a prefix of at least 12 hex digits).
    """
    path = Path(path)
    if not path.is_file():
        raise ArtefactError(f"{path}: no such model file")
    try:
        with zipfile.ZipFile(path) as z:
            names = set(z.namelist())
            if MANIFEST not in names:
                raise ArtefactError(
                    f"{path}: not an isplitee artefact (no {MANIFEST} inside); make one with "
                    "isplitee export MODEL.pt"
                )
            raw = z.read(MANIFEST)
    except (zipfile.BadZipFile, RuntimeError, NotImplementedError) as exc:
        raise ArtefactError(
            f"{path}: not a readable artefact ({exc}): the file is truncated, corrupted or not "
            "an isplitee artefact; export it again (isplitee export MODEL.pt)"
        ) from exc
    except OSError as exc:
        raise ArtefactError(f"{path}: cannot read the artefact ({exc})") from exc
    try:
        body = json.loads(raw)
    except ValueError as exc:
        raise ArtefactError(f"{path}: {MANIFEST} is not JSON ({exc})") from exc
    if not isinstance(body, dict) or body.get("format") != FORMAT:
        raise ArtefactError(f"{path}: not an isplitee artefact (no '{FORMAT}' header)")
    if body.get("format_version") != FORMAT_VERSION:
        raise ArtefactError(
            f"{path}: artefact format version {body.get('format_version')!r} is not supported "
            f"(this isplitee reads version {FORMAT_VERSION}); export it again with this release"
        )
    try:
        manifest = Manifest.model_validate(body)
        profile = ModelProfile.from_dict(manifest.profile)
    except ValidationError as exc:
        raise ArtefactError(f"{path}: invalid artefact manifest: {_describe(exc)}") from None
    except ValueError as exc:
        raise ArtefactError(f"{path}: invalid artefact manifest: {exc}") from None
    if profile.input_size != manifest.meta.input_size:
        raise ArtefactError(
            f"{path}: the profile is for {profile.input_size} px, the model takes "
            f"{manifest.meta.input_size} px: the manifest was altered"
        )
    expected = graph_names(manifest.meta)
    if sorted(manifest.graphs) != sorted(expected) or not {f"{g}.onnx" for g in expected} <= names:
        missing = sorted(
            set(expected) - set(manifest.graphs) | {g for g in expected if f"{g}.onnx" not in names}
        )
        extra = sorted(set(manifest.graphs) - set(expected))
        raise ArtefactError(
            f"{path}: the graphs do not fit the model's exits {list(manifest.meta.exit_blocks)}"
            + (f"; missing {', '.join(missing)}" if missing else "")
            + (f"; unexpected {', '.join(extra)}" if extra else "")
        )
    for name in expected:  # every checksum now: a damaged file fails at start, not mid-run
        _read_graph(path, name, manifest.graphs[name])
    if expected_hash is not None:
        _check_expected(path, manifest.model_hash, expected_hash)
    return Artefact(path, manifest, profile)


def _check_expected(path: Path, digest: str, expected: str) -> None:
    if not (12 <= len(expected) <= 64 and re.fullmatch(r"[0-9a-f]+", expected)):
        raise ArtefactError(
            f"{path}: expected hash should be 12 to 64 lower-case hex digits, got {expected!r}"
        )
    if not digest.startswith(expected):
        raise ArtefactError(
            f"{path}: model hash {digest[:12]} differs from the expected {expected[:12]}: "
            "device and cloud must load the same model"
        )


def write_artefact(
    path: str | Path,
    *,
    meta: ModelMeta,
    model_hash: str,
    profile: ModelProfile,
    graphs: Mapping[str, bytes],
    checked: Mapping[str, Any] | None = None,
    exported_with: Mapping[str, str] | None = None,
) -> Path:
    """Write an artefact atomically (a crash never leaves half a file under the real name)."""
    path = Path(path)
    if not _HEX64.fullmatch(model_hash):
        raise ValueError(f"model_hash should be 64 hex digits, got {model_hash!r}")
    if sorted(graphs) != sorted(graph_names(meta)):
        raise ValueError(f"graphs should be {graph_names(meta)}, got {sorted(graphs)}")
    manifest = Manifest(
        format=FORMAT,
        format_version=FORMAT_VERSION,
        model_hash=model_hash,
        meta=meta,
        profile=profile.to_dict(),
        graphs={
            name: GraphEntry(sha256=hashlib.sha256(data).hexdigest(), size=len(data))
            for name, data in graphs.items()
        },
        checked=dict(checked or {}),
        exported_with=dict(exported_with or {}),
    )
    tmp = path.with_name(f"{path.name}.tmp{os.getpid()}")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_STORED) as z:
            z.writestr(MANIFEST, manifest.model_dump_json(indent=1))
            for name in graph_names(meta):
                z.writestr(f"{name}.onnx", graphs[name])
        os.replace(tmp, path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise ArtefactError(f"{path}: cannot write the artefact ({exc})") from None
    return path
