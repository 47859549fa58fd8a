from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from shared.checkpoint import load_checkpoint
from shared.lab.cli import main
from shared.lab.datasets import DatasetError, load_dataset, split_indices
from shared.protocol import ENCODINGS

from .conftest import TINY_TRAIN_ARGS


def test_train_writes_a_loadable_checkpoint_and_prints_the_exit_table(
    tiny_checkpoint: Path,
) -> None:
    ckpt = load_checkpoint(tiny_checkpoint)
    meta = ckpt.meta
    assert meta.dataset == "digits" and meta.split_seed == 3 and meta.input_size == 32
    assert meta.class_names == tuple(str(i) for i in range(10))
    assert meta.temperatures is not None and len(meta.temperatures) == 7
    assert all(t > 0 for t in meta.temperatures)
    assert meta.wire_encodings is not None and len(meta.wire_encodings) == 6
    assert set(meta.wire_encodings) <= set(ENCODINGS)


def test_check_encodings_repeats_trainings_measurement(
    tmp_path: Path, tiny_checkpoint: Path, capsys
) -> None:
    """The command for older checkpoints measures what training stores, on the same images."""
    out = tmp_path / "checked.pt"
    assert main(["check-encodings", str(tiny_checkpoint), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "| exit | fp16" in printed and "auto sends" in printed
    trained, checked = load_checkpoint(tiny_checkpoint), load_checkpoint(out)
    assert checked.meta.wire_encodings == trained.meta.wire_encodings
    assert checked.hash == trained.hash  # nothing else changed


def test_training_is_deterministic_for_a_seed(tmp_path: Path, tiny_checkpoint: Path, capsys):
    out = tmp_path / "again.pt"
    assert main([*TINY_TRAIN_ARGS, "--no-export", "--out", str(out)]) == 0
    assert not out.with_suffix(".isplitee").exists()
    text = capsys.readouterr().out
    assert load_checkpoint(out).hash == load_checkpoint(tiny_checkpoint).hash
    rows = re.findall(r"^\| (\d+|final) +\| +([\d.]+) +\| ([\d.]+) ", text, re.M)
    assert [r[0] for r in rows] == ["3", "6", "9", "12", "15", "18", "final"]
    assert all(0 <= float(acc) <= 100 for _, acc, _ in rows)
    assert re.search(r"trained in \d+ s on \d+ CPU thread\(s\)", text)
    assert "held-out test split (450 images)" in text


def test_info_prints_metadata_cost_and_payload(tiny_checkpoint: Path, capsys) -> None:
    assert main(["info", str(tiny_checkpoint)]) == 0
    text = capsys.readouterr().out
    ckpt = load_checkpoint(tiny_checkpoint)
    assert ckpt.hash in text
    assert "input 32px" in text and "width 0.35" in text
    rows = {
        m[0]: m[1:]
        for m in re.findall(
            r"^\| (\d+|final) +\| ([\d.]+) +\| ([\d.]+) +\| (\S+) +\| (\d+) +\| (\d+) +\| (\d+) ",
            text,
            re.M,
        )
    }
    assert list(rows) == ["3", "6", "9", "12", "15", "18", "final"]
    # block 3 of a 0.35-wide net at 32px: 8 channels at 8x8
    assert rows["3"][2] == "8x8x8"
    assert rows["3"][3:] == (str(8 * 8 * 8 * 4), str(8 * 8 * 8 * 2), str(8 * 8 * 8))
    assert float(rows["final"][1]) == 100.0
    mflops = [float(r[0]) for r in rows.values()]
    assert mflops == sorted(mflops)


def test_info_on_a_broken_file_is_a_clear_error(tmp_path: Path, capsys) -> None:
    bad = tmp_path / "broken.pt"
    bad.write_bytes(b"not a checkpoint")
    assert main(["info", str(bad)]) == 2
    err = capsys.readouterr().err
    assert "isplitee info: error:" in err and "broken.pt" in err


def test_unknown_dataset_is_a_clear_error(tmp_path: Path, capsys) -> None:
    assert main(["train", "--dataset", "mnist", "--out", str(tmp_path / "x.pt")]) == 2
    assert "unknown dataset 'mnist'" in capsys.readouterr().err
    with pytest.raises(DatasetError, match=r"no such directory"):
        load_dataset(f"imagefolder:{tmp_path / 'none'}", 32)


def test_cifar10_without_internet_is_a_clear_error(tmp_path: Path, offline, capsys) -> None:
    with pytest.raises(DatasetError, match=r"cannot get CIFAR-10 .*use --dataset digits"):
        load_dataset(f"cifar10:{tmp_path}", 32)
    assert main(["train", "--dataset", f"cifar10:{tmp_path}", "--out", str(tmp_path / "c.pt")]) == 2
    assert "cannot get CIFAR-10" in capsys.readouterr().err


def test_imagenet_pretraining_without_internet_names_the_way_out(
    tmp_path: Path, offline, monkeypatch, capsys
) -> None:
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    args = ["train", "--pretrained", "imagenet", "--out", str(tmp_path / "m.pt")]
    assert main(args) == 2
    assert "--pretrained none" in capsys.readouterr().err


def test_imagefolder_dataset(tmp_path: Path) -> None:
    import cv2

    rng = np.random.default_rng(0)
    for cls in ("cat", "dog"):
        (tmp_path / cls).mkdir()
        for i in range(8):
            img = rng.integers(0, 256, (20, 30, 3), dtype=np.uint8)
            cv2.imwrite(str(tmp_path / cls / f"{i}.png"), img)
    splits = load_dataset(f"imagefolder:{tmp_path}", 24, seed=1)
    assert splits.class_names == ("cat", "dog")
    image, _ = splits.test[0]
    assert tuple(image.shape) == (3, 24, 24) and 0 <= float(image.min()) <= float(image.max()) <= 1
    assert len(splits.train) + len(splits.val) + len(splits.test) == 16


def test_splits_are_stratified_disjoint_and_seeded() -> None:
    labels = np.repeat(np.arange(5), 40)
    tr, va, te = split_indices(labels, seed=7)
    assert len(set(tr) | set(va) | set(te)) == 200
    assert not (set(tr) & set(va) or set(tr) & set(te) or set(va) & set(te))
    assert np.bincount(labels[te]).tolist() == [10] * 5
    assert all(
        np.array_equal(a, b) for a, b in zip(split_indices(labels, 7), (tr, va, te), strict=True)
    )
    assert not np.array_equal(split_indices(labels, 8)[2], te)


def test_console_script_help_runs() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "shared.lab.cli", "--help"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert "train" in out and "info" in out and "simulate" in out
    version = subprocess.run(
        [sys.executable, "-m", "shared.lab.cli", "--version"], capture_output=True, text=True
    )
    assert version.returncode == 0 and version.stdout.startswith("isplitee 0.")
    for module, key in (("device.cli", "model"), ("cloud_worker.cli", "models")):
        res = subprocess.run(
            [sys.executable, "-m", module, "--help"], capture_output=True, text=True
        )
        assert res.returncode == 0 and "usage:" in res.stdout and "--broker" in res.stdout
        # Without a model: one clear line naming the missing key, exit 2, no traceback.
        res = subprocess.run([sys.executable, "-m", module], capture_output=True, text=True)
        assert res.returncode == 2 and f"{key}: required" in res.stderr
        assert "Traceback" not in res.stderr
