from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pytest

from shared.cost import RewardModel, paper_cost
from shared.lab.cli import main
from shared.lab.distortions import Distortion
from shared.lab.simulate import (
    Segment,
    default_policy_names,
    make_policy_factory,
    settle_times,
    simulate,
)
from shared.lab.simulate_cli import parse_schedule

from .test_bandit import BLOCKS, synthetic_stream

POLICY_KEYS = {
    "accuracy",
    "accuracy_std",
    "cost",
    "cost_reduction",
    "edge_exit_rate",
    "offload_rate",
    "regret",
}


def test_summary_of_known_policies() -> None:
    rm = RewardModel(paper_cost(BLOCKS))
    stream = synthetic_stream(1, 1500, seed=3)
    names = default_policy_names(BLOCKS)
    res = simulate(stream, rm, {n: make_policy_factory(n, BLOCKS) for n in names}, runs=2)
    assert res.oracle_arm == 1
    p = res.policies
    assert p["oracle"].regret == pytest.approx(0.0)
    assert p["fixed:6"].mean_reward == pytest.approx(p["oracle"].mean_reward)
    assert p["final"].cost_reduction == pytest.approx(0.0)
    assert p["final"].offload_rate == 0.0 and p["final"].edge_exit_rate == 1.0
    assert p["fixed:3"].offload_rate == 1.0  # its exit is never confident in this table
    assert p["fixed:6"].cost == pytest.approx(0.6)
    assert p["fixed:6"].cost_reduction == pytest.approx(1 - 0.6 / 1.9)
    assert p["oracle"].reward_gap == 0.0
    assert 0 < p["isplitee"].reward_gap < 0.1
    assert p["random"].reward_gap > p["isplitee"].reward_gap
    for s in p.values():
        assert s.edge_exit_rate + s.offload_rate == pytest.approx(1.0)
        assert set(s.as_json()) >= POLICY_KEYS


def test_settle_times() -> None:
    segs = (Segment("a", 0, 300), Segment("b", 300, 700))
    arms = np.array([0] * 300 + [1] * 50 + [2] * 350)
    # from sample 30 on, 80 of the next 100 picks are arm 2
    assert settle_times(arms, segs, [[0], [2]], window=100) == [0, 30]
    assert settle_times(arms, segs, [[0], [3]], window=100) == [0, None]
    assert settle_times(arms, segs, [[0], [1, 2]], window=100) == [0, 0]


def test_schedule_parsing() -> None:
    segs = parse_schedule("schedule:clean:2000,gaussian_noise:2:1500,gaussian_blur:1:10", 99)
    assert segs == [
        (Distortion(), 2000),
        (Distortion("gaussian_noise", 2.0), 1500),
        (Distortion("gaussian_blur", 1.0), 10),
    ]
    assert parse_schedule("gaussian_blur:0.5", 99) == [(Distortion("gaussian_blur", 0.5), 99)]
    with pytest.raises(ValueError, match="should be DISTORTION:COUNT"):
        parse_schedule("schedule:clean:2000,gaussian_noise:2", 1)
    with pytest.raises(ValueError, match="unknown policy 'ts'"):
        make_policy_factory("ts", BLOCKS)
    with pytest.raises(ValueError, match=r"fixed needs one of the model's blocks"):
        make_policy_factory("fixed:4", BLOCKS)


def test_simulate_cli_writes_json_and_plots_and_reuses_the_table(
    tiny_checkpoint: Path, tmp_path: Path, capsys
) -> None:
    args = [
        "simulate",
        "--model",
        str(tiny_checkpoint),
        "--distortion",
        "gaussian_noise:2",
        "--samples",
        "600",
        "--runs",
        "2",
        "--cache-dir",
        str(tmp_path / "cache"),
        "--json",
        str(tmp_path / "out.json"),
        "--plots",
        str(tmp_path / "plots"),
        "--no-progress",
    ]
    t0 = time.perf_counter()
    assert main(args) == 0
    first = time.perf_counter() - t0
    text = capsys.readouterr().out
    assert "600 samples from 450 held-out test images (drawn with replacement" in text
    assert "cached table" not in text
    for name in ("isplitee", "isplitee-nonstationary", "final", "random", "oracle", "fixed:3"):
        assert f"| {name} " in text
    data = json.loads((tmp_path / "out.json").read_text())
    assert data["n_samples"] == 600 and data["runs"] == 2 and data["cost_model"] == "paper"
    assert set(data["policies"]) == {
        "isplitee",
        "isplitee-nonstationary",
        "final",
        "random",
        "oracle",
        *(f"fixed:{b}" for b in (3, 6, 9, 12, 15, 18)),
    }
    for summary in data["policies"].values():
        assert set(summary) >= POLICY_KEYS
        assert 0 <= summary["accuracy"] <= 1 and 0 <= summary["edge_exit_rate"] <= 1
    assert data["policies"]["final"]["cost_reduction"] == pytest.approx(0.0)
    for png in ("accuracy_vs_cost.png", "regret.png", "splits.png"):
        assert (tmp_path / "plots" / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    assert main([*args[:-5], "--cost", "measured", "--json", str(tmp_path / "m.json")]) == 0
    assert "cached table" in capsys.readouterr().out
    measured = json.loads((tmp_path / "m.json").read_text())
    assert measured["cost_model"] == "measured"
    # same stream, so the whole-network-on-device baseline is identical in both cost models
    assert measured["policies"]["final"]["accuracy"] == data["policies"]["final"]["accuracy"]
    assert first < 120


def test_simulate_cli_schedule_reports_settling(tiny_checkpoint: Path, tmp_path: Path, capsys):
    spec = "schedule:clean:300,gaussian_noise:3:300"
    args = ["simulate", "--model", str(tiny_checkpoint), "--distortion", spec]
    args += ["--policies", "isplitee,isplitee-nonstationary,final", "--no-progress"]
    args += ["--cache-dir", str(tmp_path), "--json", str(tmp_path / "s.json")]
    assert main(args) == 0
    text = capsys.readouterr().out
    assert "gaussian_noise:3 (best" in text
    settle = json.loads((tmp_path / "s.json").read_text())["settle"]
    assert settle["segments"] == ["clean", "gaussian_noise:3"]
    assert len(settle["isplitee"]) == 2


def test_simulate_cli_bad_arguments(tiny_checkpoint: Path, capsys) -> None:
    base = ["simulate", "--model", str(tiny_checkpoint)]
    assert main([*base, "--distortion", "fog:2"]) == 2
    assert "unknown distortion 'fog:2'" in capsys.readouterr().err
    assert main([*base, "--policies", "isplitee,greedy"]) == 2
    assert "unknown policy 'greedy'" in capsys.readouterr().err
