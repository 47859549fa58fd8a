from __future__ import annotations

import pytest
import torch

from shared.model import DEFAULT_EXIT_BLOCKS, NUM_BLOCKS, MultiExitMobileNetV2


def _randomised(model: MultiExitMobileNetV2) -> MultiExitMobileNetV2:
    """Give BatchNorm non-trivial running statistics so eval mode is not an identity."""
    g = torch.Generator().manual_seed(0)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.copy_(torch.randn(m.running_mean.shape, generator=g) * 0.1)
            m.running_var.copy_(torch.rand(m.running_var.shape, generator=g) + 0.5)
    return model.eval()


@pytest.mark.parametrize("size", [32, 224])
@pytest.mark.parametrize("batch", [1, 8])
def test_cloud_of_edge_equals_whole_network_at_every_exit(size: int, batch: int) -> None:
    torch.manual_seed(size + batch)
    model = _randomised(MultiExitMobileNetV2(num_classes=10))
    x = torch.randn(batch, 3, size, size)
    with torch.no_grad():
        whole = model(x)
        for arm, block in enumerate(model.arm_blocks):
            edge = model.edge(x, block)
            final = model.cloud(edge.activation, block)
            assert torch.allclose(final, whole[-1], atol=1e-5), block
            # every exit on the way is the same as in the full pass
            assert len(edge.logits) == arm + 1
            for got, want in zip(edge.logits, whole[: arm + 1], strict=True):
                assert torch.allclose(got, want, atol=1e-5)


def test_arms_follow_the_exit_table() -> None:
    model = MultiExitMobileNetV2(num_classes=5, exit_blocks=(2, 10))
    assert model.arm_blocks == (2, 10, NUM_BLOCKS)
    out = model.eval()(torch.randn(2, 3, 32, 32))
    assert [tuple(o.shape) for o in out] == [(2, 5)] * 3
    assert MultiExitMobileNetV2(num_classes=3).exit_blocks == DEFAULT_EXIT_BLOCKS


def test_edge_and_cloud_share_weights_with_the_model() -> None:
    model = MultiExitMobileNetV2(num_classes=4).eval()
    x = torch.randn(1, 3, 32, 32)
    before = model.cloud(model.edge(x, 6).activation, 6)
    with torch.no_grad():
        model.classifier[1].bias.add_(1.0)
    after = model.cloud(model.edge(x, 6).activation, 6)
    assert torch.allclose(after, before + 1.0, atol=1e-5)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"num_classes": 1}, "num_classes should be at least 2, got 1"),
        ({"num_classes": 10, "width_mult": 0}, "width_mult should be positive, got 0"),
        ({"num_classes": 10, "exit_blocks": (6, 3)}, r"strictly increasing .* got \[6, 3\]"),
        ({"num_classes": 10, "exit_blocks": (3, 19)}, r"in 1..18, got \[3, 19\]"),
        ({"num_classes": 10, "exit_blocks": ()}, "at least one block"),
    ],
)
def test_bad_arguments_fail_in_the_constructor(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        MultiExitMobileNetV2(**kwargs)


def test_split_must_be_an_arm() -> None:
    model = MultiExitMobileNetV2(num_classes=10)
    with pytest.raises(ValueError, match=r"split block should be one of .* got 4"):
        model.edge(torch.randn(1, 3, 32, 32), 4)
    with pytest.raises(ValueError, match=r"got 7"):
        model.cloud(torch.randn(1, 32, 4, 4), 7)


def test_imagenet_weights_fail_clearly_without_internet(tmp_path, monkeypatch, offline) -> None:
    from shared.model import WeightsUnavailableError, load_imagenet_backbone

    monkeypatch.setenv("TORCH_HOME", str(tmp_path))  # no cached copy either
    model = MultiExitMobileNetV2(num_classes=10)
    with pytest.raises(WeightsUnavailableError, match=r"ImageNet .*--pretrained none"):
        load_imagenet_backbone(model)
    with pytest.raises(WeightsUnavailableError, match=r"width_mult 1.0.*--pretrained none"):
        load_imagenet_backbone(MultiExitMobileNetV2(num_classes=10, width_mult=0.5))
