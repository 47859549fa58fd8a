"""The node's edge backends and the worker's cloud backends: ONNX Runtime must give PyTorch's
outputs (within 1e-4) at every split, and the split must stay exact: edge half + cloud half
equals the whole network, whichever runtime runs each."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from cloud_worker.backend import make_cloud_backend, split_shapes
from cloud_worker.engine import ModelBank
from cloud_worker.torch_cloud import TorchCloud, onnx_cloud
from cloud_worker.torch_cloud import max_difference as cloud_difference
from device.backend import make_backend
from device.torch_edge import TOLERANCE, TorchEdge, max_difference, onnx_edge
from shared.checkpoint import load_checkpoint
from shared.inference import confidence
from shared.runtime import default_cache_dir


@pytest.fixture(scope="module")
def ckpt(tiny_checkpoint):
    return load_checkpoint(tiny_checkpoint)


def test_onnx_edge_matches_pytorch_at_every_split(ckpt, tmp_path) -> None:
    onnx = onnx_edge(ckpt, tmp_path, threads=1)
    ref = TorchEdge(ckpt)
    assert max_difference(onnx, ref, ckpt.meta.arm_blocks, ckpt.meta.input_size) < TOLERANCE
    assert sorted(p.name for p in (tmp_path / ckpt.hash[:16]).iterdir()) == sorted(
        f"edge-{b}.onnx" for b in ckpt.meta.arm_blocks
    )


def test_split_on_onnx_edge_equals_the_whole_network(ckpt, tmp_path) -> None:
    onnx = onnx_edge(ckpt, tmp_path, threads=1)
    x = torch.rand(4, 1, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    for block in ckpt.meta.arm_blocks[:-1]:
        for img in x:
            act, logits = onnx(img.numpy(), block)
            with torch.inference_mode():
                whole = ckpt.model(img)[-1]
                cloud = ckpt.model.cloud(torch.from_numpy(act), block)
                exits = ckpt.model(img)[: len(logits)]
            assert torch.allclose(cloud, whole, atol=1e-4)
            for mine, theirs in zip(logits, exits, strict=True):
                assert np.allclose(mine, theirs.numpy(), atol=1e-4)


def test_auto_picks_onnxruntime_and_torch_is_forced_by_name(ckpt, tmp_path) -> None:
    assert make_backend("auto", ckpt, tmp_path).name == "onnxruntime"
    assert make_backend("torch", ckpt, tmp_path).name == "torch"


def test_auto_falls_back_to_torch_when_onnxruntime_is_missing(ckpt, tmp_path, monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # as on a node without the wheel
    assert make_backend("auto", ckpt, tmp_path).name == "torch"
    with pytest.raises(RuntimeError, match="onnxruntime is not usable"):
        make_backend("onnxruntime", ckpt, tmp_path)


# -- the worker's cloud half --------------------------------------------------------------------


def test_onnx_cloud_matches_pytorch_at_every_split_and_batch(ckpt, tmp_path) -> None:
    shapes = split_shapes(ckpt)
    assert sorted(shapes) == [0, *ckpt.meta.arm_blocks[:-1]]  # 0: a frame offload
    onnx = onnx_cloud(ckpt, shapes, tmp_path, threads=1)
    assert cloud_difference(onnx, TorchCloud(ckpt), shapes, (1, 3, 16)) < TOLERANCE
    assert sorted(p.name for p in (tmp_path / ckpt.hash[:16]).iterdir()) == sorted(
        f"cloud-{b}.onnx" for b in shapes
    )


def test_edge_and_cloud_both_on_onnxruntime_equal_the_whole_network(ckpt, tmp_path) -> None:
    """The split a deployment runs by default: each half on ONNX Runtime, the final classifier's
    class and confidence as the whole PyTorch network gives them."""
    edge = onnx_edge(ckpt, tmp_path, threads=1)
    bank = ModelBank([ckpt.path], backend="onnxruntime", cache_dir=tmp_path, threads=1)
    assert bank.halves[ckpt.hash].name == "onnxruntime"
    x = torch.rand(6, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    with torch.inference_mode():
        want = confidence(ckpt.model(x)[-1], ckpt.meta.arm_temperatures()[-1])
    for block in ckpt.meta.arm_blocks[:-1]:
        acts = [edge(img[None].numpy(), block)[0] for img in x]
        answers = bank.run(ckpt.hash, block, acts)
        assert answers.labels.tolist() == want[1].tolist()
        assert np.allclose(answers.confidences, want[0], atol=1e-4)


def test_worker_backend_auto_torch_and_fallback(ckpt, tmp_path, monkeypatch) -> None:
    import sys

    assert make_cloud_backend("auto", ckpt, tmp_path).name == "onnxruntime"
    assert make_cloud_backend("torch", ckpt, tmp_path).name == "torch"
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # a worker without the wheel
    assert make_cloud_backend("auto", ckpt, tmp_path / "other").name == "torch"
    with pytest.raises(RuntimeError, match="onnxruntime is not usable"):
        make_cloud_backend("onnxruntime", ckpt, tmp_path / "other")


def test_a_service_writes_its_onnx_cache_where_systemd_says(monkeypatch, tmp_path) -> None:
    monkeypatch.setenv("CACHE_DIRECTORY", str(tmp_path / "svc"))
    assert default_cache_dir() == tmp_path / "svc" / "onnx"
    monkeypatch.delenv("CACHE_DIRECTORY")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert default_cache_dir() == tmp_path / "xdg" / "isplitee" / "onnx"
