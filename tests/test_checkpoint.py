from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from shared.checkpoint import (
    CheckpointError,
    ModelMeta,
    load_checkpoint,
    save_checkpoint,
)
from shared.model import MultiExitMobileNetV2


def _meta(**overrides) -> ModelMeta:
    base = {"num_classes": 3, "input_size": 32, "class_names": ("a", "b", "c"), "width_mult": 0.35}
    return ModelMeta(**{**base, **overrides})


@pytest.fixture
def saved(tmp_path: Path) -> tuple[Path, MultiExitMobileNetV2, str]:
    torch.manual_seed(0)
    model = MultiExitMobileNetV2(num_classes=3, width_mult=0.35).eval()
    path = tmp_path / "m.pt"
    digest = save_checkpoint(path, model, _meta(temperatures=(1.5,) * 7))
    return path, model, digest


def test_round_trip_keeps_weights_meta_and_hash(saved) -> None:
    path, model, digest = saved
    ckpt = load_checkpoint(path)
    assert ckpt.hash == digest and len(digest) == 64
    assert ckpt.meta.temperatures == (1.5,) * 7
    assert ckpt.meta.class_names == ("a", "b", "c")
    assert not ckpt.model.training
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        for a, b in zip(model(x), ckpt.model(x), strict=True):
            assert torch.equal(a, b)
    assert load_checkpoint(path, expected_hash=digest[:12]).hash == digest


def test_hash_changes_with_weights_and_with_metadata(tmp_path: Path, saved) -> None:
    _, model, digest = saved
    assert save_checkpoint(tmp_path / "b.pt", model, _meta()) != digest  # temperatures differ
    with torch.no_grad():
        model.exits["3"][3].bias.add_(1e-3)
    assert save_checkpoint(tmp_path / "c.pt", model, _meta(temperatures=(1.5,) * 7)) != digest


def test_a_file_from_before_wire_encodings_keeps_its_hash(tmp_path: Path, saved) -> None:
    """Checkpoints written before the field existed have no key for it: they still load, with
    the hash their fleet already expects; one that holds the check hashes differently."""
    path, model, digest = saved
    payload = torch.load(path, weights_only=True)
    meta = json.loads(payload["meta"])
    assert meta.pop("wire_encodings") is None
    payload["meta"] = json.dumps(meta)
    torch.save(payload, tmp_path / "old.pt")
    old = load_checkpoint(tmp_path / "old.pt", expected_hash=digest)
    assert old.meta.wire_encodings is None
    checked = _meta(temperatures=(1.5,) * 7, wire_encodings=("int4",) * 6)
    assert save_checkpoint(tmp_path / "checked.pt", model, checked) != digest


def test_missing_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match=r"nope\.pt: no such checkpoint file"):
        load_checkpoint(tmp_path / "nope.pt")


def test_truncated_file_is_named(saved) -> None:
    path, _, _ = saved
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match=rf"{path.name}: cannot read checkpoint .*truncated"):
        load_checkpoint(path)


def test_a_file_of_garbage_is_one_line_and_never_advises_unsafe_loading(tmp_path: Path) -> None:
    """torch's own error for a file that is not a checkpoint runs to seven lines and tells the
    user to load it with weights_only=False: arbitrary code from a file nobody vouched for."""
    path = tmp_path / "garbage.pt"
    path.write_bytes(np.random.default_rng(0).bytes(5000))
    with pytest.raises(CheckpointError) as e:
        load_checkpoint(path)
    text = str(e.value)
    assert text.startswith(f"{path}: cannot read checkpoint (UnpicklingError)")
    assert "\n" not in text and "weights_only" not in text


def test_flipped_weight_bytes_are_detected(saved) -> None:
    path, _, _ = saved
    ckpt = torch.load(path, weights_only=True)
    ckpt["state_dict"]["classifier.1.weight"][0, 0] += 1.0
    torch.save(ckpt, path)
    with pytest.raises(CheckpointError, match=r"content hash mismatch.*corrupted"):
        load_checkpoint(path)


def test_weights_that_do_not_fit_the_metadata(tmp_path: Path) -> None:
    from shared.checkpoint import FORMAT, FORMAT_VERSION, content_hash

    meta = _meta(width_mult=0.5)  # says 0.5, weights are 0.35
    state = MultiExitMobileNetV2(num_classes=3, width_mult=0.35).state_dict()
    path = tmp_path / "mismatch.pt"
    torch.save(
        {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "meta": meta.model_dump_json(),
            "content_hash": content_hash(meta, state),
            "state_dict": state,
        },
        path,
    )
    with pytest.raises(CheckpointError, match=r"mismatch.pt: weights do not match the metadata"):
        load_checkpoint(path)


def test_expected_hash_mismatch(saved) -> None:
    path, _, _ = saved
    with pytest.raises(CheckpointError, match=r"differs from the expected 000000000000"):
        load_checkpoint(path, expected_hash="0" * 64)


def test_other_files_are_refused(tmp_path: Path) -> None:
    plain = tmp_path / "plain.pt"
    torch.save({"weights": torch.zeros(2)}, plain)
    with pytest.raises(CheckpointError, match=r"not an isplitee checkpoint"):
        load_checkpoint(plain)
    old = tmp_path / "future.pt"
    torch.save({"format": "isplitee.checkpoint", "format_version": 99}, old)
    with pytest.raises(CheckpointError, match=r"format version 99 is not supported"):
        load_checkpoint(old)


class _Evil:
    def __reduce__(self):
        return (print, ("unpickled!",))


def test_arbitrary_objects_are_never_unpickled(tmp_path: Path, capsys) -> None:
    path = tmp_path / "evil.pt"
    torch.save({"format": "isplitee.checkpoint", "x": _Evil()}, path)
    with pytest.raises(CheckpointError, match=r"cannot read checkpoint"):
        load_checkpoint(path)
    assert "unpickled!" not in capsys.readouterr().out


def test_metadata_is_validated() -> None:
    with pytest.raises(ValueError, match=r"class_names has 2 names for 3 classes"):
        _meta(class_names=("a", "b"))
    with pytest.raises(ValueError, match=r"temperatures has 2 values for 7 arms"):
        _meta(temperatures=(1.0, 1.0))
    with pytest.raises(ValueError, match=r"Extra inputs are not permitted"):
        _meta(colour="blue")


# -- review findings (issue 10, section 2): each failed before its fix -----------------------------
def _rewrite(path: Path, **changes) -> None:
    """Re-save a checkpoint's payload with some entries replaced (a damaged or forged file)."""
    payload = torch.load(path, weights_only=True)
    payload.update(changes)
    torch.save(payload, path)


def test_a_state_dict_that_is_not_tensors_is_a_checkpoint_error(saved) -> None:
    path, _, _ = saved
    _rewrite(path, state_dict={"classifier.1.weight": [1.0, 2.0]})
    with pytest.raises(CheckpointError, match=r"m\.pt: state_dict should map parameter names to "):
        load_checkpoint(path)
    _rewrite(path, state_dict=[1, 2])
    with pytest.raises(CheckpointError, match=r"state_dict should map .* got list"):
        load_checkpoint(path)


@pytest.mark.parametrize("blocks", [[], [3, 3], [9, 6], [0, 3], [3, 19], [3, 25]])
def test_invalid_exit_blocks_are_refused_naming_the_file(saved, blocks) -> None:
    path, _, _ = saved
    meta = json.loads(torch.load(path, weights_only=True)["meta"])
    _rewrite(path, meta=json.dumps({**meta, "exit_blocks": blocks, "temperatures": None}))
    with pytest.raises(
        CheckpointError, match=r"(?s)m\.pt: invalid checkpoint metadata.*exit_blocks"
    ):
        load_checkpoint(path)
    with pytest.raises(ValueError, match=r"exit_blocks should be strictly increasing"):
        _meta(exit_blocks=tuple(blocks))


@pytest.mark.parametrize("prefix", ["", "0", "2ad3c480", "xyz" * 5, "A" * 12, "0" * 65])
def test_expected_hash_must_be_a_real_prefix(saved, prefix) -> None:
    path, _, digest = saved
    with pytest.raises(CheckpointError, match=r"expected hash should be 12 to 64 lower-case hex"):
        load_checkpoint(path, expected_hash=prefix)
    assert load_checkpoint(path, expected_hash=digest).hash == digest
