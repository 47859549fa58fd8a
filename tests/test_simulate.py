from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pytest

from shared.cost import RewardModel, paper_cost
from shared.lab.cli import main
from shared.lab.distortions import Distortion
from shared.lab.scenario import parse_schedule
from shared.lab.simulate import (
    Segment,
    default_policy_names,
    make_policy_factory,
    settle_times,
    simulate,
)

from .test_bandit import BLOCKS, synthetic_stream

POLICY_KEYS = {
    "accuracy",
    "accuracy_std",
    "cost",
    "cost_reduction",
    "edge_exit_rate",
    "offload_rate",
    "audit_rate",
    "regret",
}


def test_summary_of_known_policies() -> None:
    rm = RewardModel(paper_cost(BLOCKS))
    streams = [synthetic_stream(1, 1500, seed=s) for s in (3, 4)]
    names = default_policy_names(BLOCKS)
    res = simulate(streams, rm, {n: make_policy_factory(n, rm) for n in names})
    assert res.runs == 2
    assert res.oracle_arm == 1
    p = res.policies
    assert p["oracle"].regret == pytest.approx(0.0)
    assert p["fixed:6"].mean_reward == pytest.approx(p["oracle"].mean_reward)
    assert p["final"].cost_reduction == pytest.approx(0.0)
    assert p["final"].offload_rate == 0.0 and p["final"].edge_exit_rate == 1.0
    assert p["fixed:3"].offload_rate == 1.0  # its exit is never confident in this table
    assert p["fixed:6"].cost == pytest.approx(0.6)
    assert p["fixed:6"].cost_reduction == pytest.approx(1 - 0.6 / 1.9)
    assert p["oracle"].reward_gap == pytest.approx(0.0, abs=1e-12)
    assert 0 < p["isplitee-paper"].reward_gap < 0.1
    assert p["random"].reward_gap > p["isplitee-paper"].reward_gap
    # the audited policy: the final layer's accuracy, cheaper than offloading every frame
    assert p["offload-all"].cost == pytest.approx(0.8) and p["offload-all"].audit_rate == 1.0
    # an audited frame earns the paper's offload reward at its split: C_L - (0.3 + 0.5)
    mean_final = np.mean([s.confidences[:, -1].mean() for s in streams])
    assert p["offload-all"].mean_reward == pytest.approx(mean_final - 0.8)
    assert p["isplitee"].accuracy >= p["final"].accuracy - 0.02
    assert p["isplitee"].cost_reduction > p["offload-all"].cost_reduction
    assert 0 < p["isplitee"].audit_rate < 1
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
    rm = RewardModel(paper_cost(BLOCKS))
    with pytest.raises(ValueError, match="unknown policy 'ts'"):
        make_policy_factory("ts", rm)
    with pytest.raises(ValueError, match=r"BLOCK should be one of the model's blocks"):
        make_policy_factory("fixed:4", rm)
    with pytest.raises(ValueError, match=r"exploration c should be a finite number >= 0"):
        make_policy_factory("isplitee", rm, c=-1.0)


def test_runs_are_independent_draws_and_reshuffles_are_the_callers_choice() -> None:
    rm = RewardModel(paper_cost(BLOCKS))
    stream = synthetic_stream(1, 500, seed=3)
    rng = np.random.default_rng(0)
    res = simulate([stream, stream.shuffled(rng)], rm, {"final": make_policy_factory("final", rm)})
    assert res.runs == 2 and res.policies["final"].accuracy_std == 0.0  # same images, reordered
    with pytest.raises(ValueError, match="at least one stream"):
        simulate([], rm, {})


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
    names = ("isplitee", "isplitee-nonstationary", "isplitee-paper", "offload-all", "final")
    for name in (*names, "random", "oracle", "fixed:3"):
        assert f"| {name} " in text
    data = json.loads((tmp_path / "out.json").read_text())
    assert data["n_samples"] == 600 and data["runs"] == 2 and data["cost_model"] == "paper"
    assert data["params"]["alpha"] == 0.8  # the recommended default, not the paper's 0.5
    assert set(data["policies"]) == {
        *names,
        "random",
        "oracle",
        *(f"fixed:{b}" for b in (3, 6, 9, 12, 15, 18)),
    }
    for summary in data["policies"].values():
        assert set(summary) >= POLICY_KEYS
        assert 0 <= summary["accuracy"] <= 1 and 0 <= summary["edge_exit_rate"] <= 1
    assert data["policies"]["final"]["cost_reduction"] == pytest.approx(0.0)
    # audits are offloads: offload-all audits every frame and pays for it
    assert data["policies"]["offload-all"]["audit_rate"] == 1.0
    assert data["policies"]["offload-all"]["cost_reduction"] == pytest.approx(1 - 0.8 / 1.9)
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
    args += ["--policies", "isplitee,isplitee-paper-nonstationary,final", "--no-progress"]
    args += ["--cache-dir", str(tmp_path), "--json", str(tmp_path / "s.json")]
    assert main(args) == 0
    text = capsys.readouterr().out
    assert "gaussian_noise:3 (best" in text
    settle = json.loads((tmp_path / "s.json").read_text())["settle"]
    assert settle["segments"] == ["clean", "gaussian_noise:3"]
    assert len(settle["isplitee-paper-nonstationary"]) == 2
    after = json.loads((tmp_path / "s.json").read_text())["after_change"]
    assert after["window"] == 500 and len(after["isplitee"]["accuracy"]) == 2
    assert "accuracy % over the first 500 samples of each segment" in text


def test_simulate_cli_bad_arguments(tiny_checkpoint: Path, capsys) -> None:
    base = ["simulate", "--model", str(tiny_checkpoint)]
    assert main([*base, "--distortion", "fog:2"]) == 2
    assert "unknown distortion 'fog:2'" in capsys.readouterr().err
    assert main([*base, "--policies", "isplitee,greedy"]) == 2
    assert "unknown policy 'greedy'" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--runs", "0"], "--runs should be at least 1, got 0"),
        (["--c", "-1"], "--c should be a finite number >= 0, got -1.0"),
        (["--c", "nan"], "--c should be a finite number >= 0, got nan"),
        (["--discount", "1"], r"--discount should be in (0, 1), got 1.0"),
        (["--alpha", "1.5"], "--alpha should be in [0, 1], got 1.5"),
        (["--samples", "0"], "--samples should be at least 1, got 0"),
        (["--policies", ",,"], "--policies ',,' names no policy"),
        (["--policies", "isplitee,greedy"], "unknown policy 'greedy'"),
        (["--policies", "fixed:4"], "BLOCK should be one of the model's blocks"),
        (["--edge-timing", "measure"], "--edge-timing applies to --cost measured only"),
        (["--link-mbps", "5", "--rtt-ms", "3"], "--link-mbps, --rtt-ms apply to --cost measured"),
        (["--cost", "measured", "--offload", "1"], "--offload applies to --cost paper only"),
        (
            ["--cost", "measured", "--edge-timing", "measure", "--edge-gmacs", "3"],
            "--edge-gmacs does not apply with --edge-timing measure",
        ),
        (
            ["--distortion", "schedule:clean:300,gaussian_noise:3:300", "--samples", "500"],
            "--samples does not apply to a schedule",
        ),
        (["--policies", "final,random", "--c", "0.5"], "--c applies to isplitee and isplitee-"),
        (["--policies", "isplitee", "--discount", "0.9"], "--discount applies to isplitee-non"),
        (["--policies", "isplitee-paper", "--target", "0.01"], "--target applies to isplitee"),
        (["--target", "0"], "--target should be in (0, 1], got 0.0"),
        (["--min-audit-rate", "2"], "--min-audit-rate should be in (0, 1], got 2.0"),
    ],
)
def test_simulate_cli_refuses_bad_or_idle_flags_before_building_a_table(
    tiny_checkpoint: Path, monkeypatch, capsys, flags: list[str], message: str
) -> None:
    """Issue 10, section 2: each of these used to build the confidence table first (minutes on
    CIFAR-10) or to be silently ignored."""
    import shared.lab.confidence

    def no_table(*args, **kwargs):
        raise AssertionError("the confidence table was built before the flags were checked")

    monkeypatch.setattr(shared.lab.confidence, "build_table", no_table)
    monkeypatch.setattr(shared.lab.confidence, "build_stream", no_table)
    assert main(["simulate", "--model", str(tiny_checkpoint), *flags, "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert message in err, err


def test_measured_costs_price_each_split_in_what_a_node_on_auto_sends(tiny_checkpoint) -> None:
    """The simulator's default encoding is the node's: the checkpoint's per-split choice."""
    from shared.checkpoint import Checkpoint, load_checkpoint
    from shared.lab.scenario import cost_model

    loaded = load_checkpoint(tiny_checkpoint)
    mixed = ("int4", "int8", "fp16", "fp32", "int4", "int8")
    meta = loaded.meta.model_copy(update={"wire_encodings": mixed})
    ckpt = Checkpoint(loaded.model, meta, loaded.hash, loaded.path)
    auto = cost_model(ckpt, "measured")
    for i, encoding in enumerate(mixed):
        alone = cost_model(ckpt, "measured", encoding=encoding)
        assert auto.offload[i] == pytest.approx(alone.offload[i])
    assert auto.offload[0] < cost_model(ckpt, "measured", encoding="fp16").offload[0]
    assert cost_model(ckpt, "measured", encoding="auto").offload == auto.offload
