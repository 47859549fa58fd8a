"""The deploy artefact: export checked against PyTorch, one file, refusals that name the file."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

from device.onnx_edge import OnnxEdge
from device.torch_edge import TorchEdge
from shared.artefact import MANIFEST, ArtefactError, graph_names, load_artefact
from shared.checkpoint import Checkpoint, load_checkpoint
from shared.inference import confidence
from shared.lab import export as export_module
from shared.lab.export import ExportError, export_artefact, held_out
from shared.model_file import load_model


@pytest.fixture(scope="module")
def ckpt(tiny_checkpoint) -> Checkpoint:
    return load_checkpoint(tiny_checkpoint)


def _rewrite(src: Path, dst: Path, change) -> Path:
    """A copy of the artefact ``src`` with ``change(name, data) -> data`` applied to each
    member (the manifest as a dict)."""
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w") as zout:
        for name in zin.namelist():
            data = zin.read(name)
            if name == MANIFEST:
                data = json.dumps(change(name, json.loads(data))).encode()
            else:
                data = change(name, data)
            zout.writestr(name, data)
    return dst


def test_one_file_with_the_checkpoints_hash_and_every_split(tiny_artefact, ckpt) -> None:
    art = load_artefact(tiny_artefact)
    assert art.hash == ckpt.hash  # a node on one and a worker on the other interoperate
    assert art.meta == ckpt.meta
    assert art.profile == ckpt.profile
    assert sorted(art.manifest.graphs) == sorted(graph_names(ckpt.meta))
    assert art.manifest.checked["images"] == 200
    assert max(art.manifest.checked["max_difference"].values()) <= 1e-4
    assert len(art.manifest.checked["max_difference"]) == 2 * len(ckpt.meta.arm_blocks) - 1
    with zipfile.ZipFile(tiny_artefact) as z:
        assert not [n for n in z.namelist() if n.endswith((".pkl", ".pt"))]
    assert type(load_model(tiny_artefact)).__name__ == "Artefact"
    assert type(load_model(ckpt.path)).__name__ == "Checkpoint"


def test_the_artefacts_edge_graphs_give_pytorchs_predictions(tiny_artefact, ckpt) -> None:
    edge, ref = OnnxEdge.from_artefact(load_artefact(tiny_artefact), threads=1), TorchEdge(ckpt)
    x = held_out(ckpt, 40).numpy()
    temps = ckpt.meta.arm_temperatures()
    for block in ckpt.meta.arm_blocks:
        for img in x:
            (act, logits), (act_ref, logits_ref) = edge(img[None], block), ref(img[None], block)
            assert np.abs(act - act_ref).max() <= 1e-4
            for i, (a, b) in enumerate(zip(logits, logits_ref, strict=True)):
                assert confidence(a, temps[i])[1] == confidence(b, temps[i])[1]


def test_info_reads_either_file(tiny_artefact, tiny_checkpoint) -> None:
    for path, kind in ((tiny_artefact, "artefact"), (tiny_checkpoint, "checkpoint")):
        out = subprocess.run(
            [sys.executable, "-m", "shared.lab.cli", "info", str(path)],
            capture_output=True,
            text=True,
        )
        assert out.returncode == 0, out.stderr
        assert out.stdout.startswith(kind) and load_checkpoint(tiny_checkpoint).hash in out.stdout


def test_a_split_that_disagrees_is_named_and_nothing_is_written(
    ckpt, tmp_path, monkeypatch
) -> None:
    real = export_module._graph
    skewed = load_checkpoint(ckpt.path)
    with torch.no_grad():
        skewed.model.features[4].conv[0][0].weight.mul_(1.5)  # block 5: on the way to split 6

    def graph(c, name, example):
        return real(skewed if name == "blocks-4-6" else c, name, example)

    monkeypatch.setattr(export_module, "_graph", graph)
    out = tmp_path / "bad.isplitee"
    with pytest.raises(ExportError, match=r"blocks 4-6: split 6 \(edge half at split 6\) differs"):
        export_artefact(ckpt, out, images=held_out(ckpt, 20))
    assert not out.exists() and not list(tmp_path.iterdir())


def test_a_tampered_graph_is_refused_at_load(tiny_artefact, tmp_path) -> None:
    def flip(name, data):
        if name == "blocks-4-6.onnx":
            data = bytearray(data)
            data[len(data) // 2] ^= 0xFF
            return bytes(data)
        return data

    bad = _rewrite(tiny_artefact, tmp_path / "tampered.isplitee", flip)
    with pytest.raises(ArtefactError, match=r"tampered\.isplitee: graph blocks-4-6\.onnx does not"):
        load_artefact(bad)


def test_metadata_the_graphs_do_not_fit_is_refused(tiny_artefact, tmp_path) -> None:
    def bigger(name, data):
        if name == MANIFEST:
            data["meta"]["input_size"] = data["profile"]["input_size"] = 64
        return data

    art = load_artefact(_rewrite(tiny_artefact, tmp_path / "meta.isplitee", bigger))
    with pytest.raises(ArtefactError, match=r"meta\.isplitee: graph blocks-1-3 does not match"):
        OnnxEdge.from_artefact(art)

    def fewer_exits(name, data):
        if name == MANIFEST:
            data["meta"]["exit_blocks"] = [3, 6]
            data["meta"]["temperatures"] = data["meta"]["temperatures"][:3]
            data["meta"]["wire_encodings"] = data["meta"]["wire_encodings"][:2]
        return data

    with pytest.raises(
        ArtefactError, match=r"exits \[3, 6\]; missing blocks-7-19; unexpected blocks-10-12"
    ):
        load_artefact(_rewrite(tiny_artefact, tmp_path / "exits.isplitee", fewer_exits))


@pytest.mark.parametrize(
    ("make", "match"),
    [
        (lambda p, src: p.write_bytes(src.read_bytes()[: len(src.read_bytes()) // 2]), "truncated"),
        (lambda p, src: p.write_text("not a model\n"), "not a readable artefact"),
        (
            lambda p, src: zipfile.ZipFile(p, "w").writestr("other.json", "{}"),
            "not an isplitee artefact",
        ),
    ],
    ids=["truncated", "text", "foreign-zip"],
)
def test_truncated_or_foreign_files_are_one_clear_error(tiny_artefact, tmp_path, make, match):
    path = tmp_path / "model.isplitee"
    make(path, tiny_artefact)
    with pytest.raises(ArtefactError, match=match) as e:
        load_model(path)
    assert str(path) in str(e.value) and "\n" not in str(e.value)


def test_a_newer_format_and_another_hash_are_refused(tiny_artefact, ckpt, tmp_path) -> None:
    def newer(name, data):
        if name == MANIFEST:
            data["format_version"] = 99
        return data

    with pytest.raises(ArtefactError, match="format version 99 is not supported"):
        load_artefact(_rewrite(tiny_artefact, tmp_path / "v99.isplitee", newer))
    load_artefact(tiny_artefact, expected_hash=ckpt.hash[:12])
    with pytest.raises(ArtefactError, match="differs from the expected"):
        load_artefact(tiny_artefact, expected_hash="0" * 12)


def test_export_cli_writes_beside_the_checkpoint(ckpt, tmp_path) -> None:
    src = tmp_path / "copy.pt"
    shutil.copy(ckpt.path, src)
    out = subprocess.run(
        [sys.executable, "-m", "shared.lab.cli", "export", str(src), "--images", "20"],
        capture_output=True,
        text=True,
    )
    assert out.returncode == 0, out.stderr
    art = load_artefact(tmp_path / "copy.isplitee")
    assert art.hash == ckpt.hash and art.manifest.checked["images"] == 20


def test_the_torch_backend_on_an_artefact_is_refused_by_name(tiny_artefact, tmp_path) -> None:
    from cloud_worker.backend import make_cloud_backend
    from device.backend import make_backend

    art = load_artefact(tiny_artefact)
    for make in (make_backend, make_cloud_backend):
        with pytest.raises(ValueError, match="backend 'torch' needs the checkpoint's weights"):
            make("torch", art, tmp_path)
        assert make("auto", art, tmp_path).name == "onnxruntime"


def test_export_never_overwrites_the_checkpoint_and_bad_arguments_are_one_line(
    ckpt, tmp_path
) -> None:
    from shared.lab.cli import main

    src = tmp_path / "same.pt"
    shutil.copy(ckpt.path, src)
    before = src.read_bytes()
    assert main(["export", str(src), "--out", str(src)]) == 2
    assert main(["export", str(src), "--images", "0"]) == 2
    assert main(["export", str(src), "--out", "/proc/none/x.isplitee", "--images", "5"]) == 2
    assert main(["train", "--out", str(tmp_path / "m.isplitee")]) == 2
    assert src.read_bytes() == before and not (tmp_path / "m.isplitee").exists()


def test_damaged_zip_entries_are_one_clear_error(tiny_artefact, tmp_path) -> None:
    """A flipped bit can mark an entry encrypted or give it an unknown compression method:
    zipfile raises RuntimeError / NotImplementedError there, not BadZipFile."""
    data = bytearray(tiny_artefact.read_bytes())
    central = data.rfind(b"PK\x01\x02")  # the last entry's central-directory record
    bad = tmp_path / "method.isplitee"
    data[central + 10] = 99  # compression method
    bad.write_bytes(bytes(data))
    with pytest.raises(ArtefactError, match=r"method\.isplitee"):
        load_artefact(bad)


def test_the_isplitee_command_reads_an_artefact_without_torch(tiny_artefact) -> None:
    """`isplitee info MODEL` is the README's way to see a model's hash on a device: a [device]
    install has the command but no torch, nor the training extras."""
    blocked = ["torch", "torchvision", "onnx", "sklearn", "skimage", "matplotlib", "tqdm", "rich"]
    code = (
        "import sys\n"
        f"for n in {blocked!r}: sys.modules[n] = None\n"
        "from shared.lab.cli import main\n"
        f"sys.exit(main(['info', {str(tiny_artefact)!r}]))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("artefact")
