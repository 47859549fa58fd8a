from __future__ import annotations

import pytest

from shared.model import MultiExitMobileNetV2
from shared.profile import profile_model


def test_full_network_matches_torchvision_published_count() -> None:
    # torchvision's model table gives MobileNetV2 0.30 GFLOPS (multiply-accumulates) at 224.
    prof = profile_model(MultiExitMobileNetV2(num_classes=1000), 224)
    assert 299e6 < prof.total_macs < 302e6
    cumulative = [b.cumulative_macs for b in prof.blocks]
    assert cumulative == sorted(cumulative) and len(cumulative) == 19


def test_activation_shapes_and_payload_bytes() -> None:
    prof = profile_model(MultiExitMobileNetV2(num_classes=10), 224)
    b3 = prof.block(3)
    assert b3.out_shape == (24, 56, 56)
    assert b3.payload_bytes("fp32") == 24 * 56 * 56 * 4
    assert b3.payload_bytes("fp16") == 24 * 56 * 56 * 2
    assert b3.payload_bytes("int8") == 24 * 56 * 56
    assert prof.block(15).out_shape == (160, 7, 7)
    # exit head: BN + pool + Linear(C, classes) -> C * classes MACs
    assert prof.exit_macs[3] == 24 * 10
    with pytest.raises(ValueError, match=r"encoding should be one of .* got 'bf8'"):
        b3.payload_bytes("bf8")
