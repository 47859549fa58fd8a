"""One registry of policies (issue 21): every name a user can give is one entry, and the node's
configuration, its runtime settings, the simulator and its CLI all read it."""

from __future__ import annotations

import pytest

from device.config import DeviceConfig
from device.settings import SettingError, validate_policy
from shared.cost import RewardModel, paper_cost
from shared.lab.simulate import default_policy_names, make_policy_factory
from shared.policy import (
    POLICY_SPECS,
    SPECS,
    build_policy,
    find_spec,
    listing,
    options_for,
    specs_taking,
)
from shared.policy.registry import OPTIONS

BLOCKS = (3, 6, 9, 19)
RM = RewardModel(paper_cost(BLOCKS), alpha=0.8)
VALUES = {"c": 0.5, "discount": 0.9, "target": 0.05, "min_audit_rate": 0.1}


def _example(spec: str) -> str:
    return spec.replace("BLOCK", "6")


def test_the_names_users_give_are_unchanged() -> None:
    assert POLICY_SPECS == (
        "isplitee",
        "isplitee-nonstationary",
        "isplitee-paper",
        "isplitee-paper-nonstationary",
        "offload-all",
        "fixed:BLOCK",
        "final",
        "random",
    )
    assert listing().endswith("final, random or fixed:BLOCK")


@pytest.mark.parametrize("entry", SPECS, ids=lambda e: e.spec)
def test_every_entry_builds_takes_its_options_and_refuses_the_others(entry) -> None:
    spec = _example(entry.spec)
    policy = build_policy(spec, RM, **options_for(spec, **VALUES, seed=3))
    assert policy.spec == spec and find_spec(spec) == (entry, "6" if entry.argument else None)
    for option in OPTIONS:
        if option in entry.options:
            assert spec in {_example(s) for s in specs_taking(option)}
        else:
            with pytest.raises(ValueError, match=rf"{option}|does not explore"):
                build_policy(spec, RM, **{option: VALUES[option]})


@pytest.mark.parametrize("spec", POLICY_SPECS)
def test_config_settings_and_the_simulator_accept_every_entry(spec: str) -> None:
    spec = _example(spec)
    assert DeviceConfig(model="m.isplitee", policy=spec).policy == spec
    assert validate_policy(spec, BLOCKS) == spec
    assert make_policy_factory(spec, RM, c=0.5, c_nonstationary=0.6)(0).spec == spec


def test_unknown_names_are_refused_everywhere() -> None:
    with pytest.raises(ValueError, match="unknown policy 'ts'"):
        find_spec("ts")
    with pytest.raises(SettingError, match="policy should be one of isplitee"):
        validate_policy("ts", BLOCKS)
    with pytest.raises(ValueError, match="policy"):
        DeviceConfig(model="m.isplitee", policy="fixed")


def test_the_simulator_s_default_table_comes_from_the_registry() -> None:
    assert default_policy_names(BLOCKS) == [
        *("isplitee", "isplitee-nonstationary", "isplitee-paper", "offload-all", "final"),
        *("random", "fixed:3", "fixed:6", "fixed:9", "oracle"),
    ]
