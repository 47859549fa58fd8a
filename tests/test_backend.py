"""The node's edge backends: ONNX Runtime must give PyTorch's outputs (within 1e-4) at every
split, and the split must stay exact: edge half on ONNX Runtime + cloud half on PyTorch equals
the whole network."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from device.backend import TOLERANCE, OnnxEdge, TorchEdge, make_backend, max_difference
from shared.checkpoint import load_checkpoint


@pytest.fixture(scope="module")
def ckpt(tiny_checkpoint):
    return load_checkpoint(tiny_checkpoint)


def test_onnx_edge_matches_pytorch_at_every_split(ckpt, tmp_path) -> None:
    onnx = OnnxEdge(ckpt, tmp_path, threads=1)
    ref = TorchEdge(ckpt)
    assert max_difference(onnx, ref, ckpt.meta.arm_blocks, ckpt.meta.input_size) < TOLERANCE
    assert sorted(p.name for p in (tmp_path / ckpt.hash[:16]).iterdir()) == sorted(
        f"edge-{b}.onnx" for b in ckpt.meta.arm_blocks
    )


def test_split_on_onnx_edge_equals_the_whole_network(ckpt, tmp_path) -> None:
    onnx = OnnxEdge(ckpt, tmp_path, threads=1)
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
