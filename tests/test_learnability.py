from __future__ import annotations

import math

import numpy as np
import pytest

from shared.lab.learnability import audit_floor, separability


def _two_arms(delta: float, sigma: float, n: int = 40_000, seed: int = 1) -> np.ndarray:
    """Arm 0 beats arm 1 by ``delta`` on average; their per-sample difference has std sigma."""
    rng = np.random.default_rng(seed)
    base = rng.normal(-1.0, 0.5, n)
    diff = rng.normal(0.0, sigma, n)
    diff = (diff - diff.mean()) / diff.std() * sigma + delta  # exact moments
    return np.column_stack([base + diff, base])


def test_samples_to_rank_and_wrong_ranking_follow_the_paired_difference() -> None:
    m = _two_arms(delta=0.05, sigma=2.0)
    s = separability(m, 2000, resamples=200)
    assert (s.best, s.runner_up) == (0, 1)
    assert s.sd == pytest.approx(2.0, rel=1e-9)
    assert s.samples_to_rank == pytest.approx((2 * 2.0 / 0.05) ** 2, rel=1e-9)
    expected = 0.5 * math.erfc(0.05 * math.sqrt(2000) / 2.0 / math.sqrt(2))
    assert s.wrong_at_horizon == pytest.approx(expected, rel=1e-9)
    assert 0.1 < s.wrong_at_horizon < 0.2  # a hard pair: 6,400 samples to rank at 2 s.e.
    assert s.runner_up_gap == pytest.approx(0.05 / abs(s.oracle), rel=1e-9)


def test_a_tie_leaves_the_hindsight_gap_of_two_equal_means() -> None:
    """Two independent arms with one mean: E[max of two means over T] - mu = sigma/sqrt(pi T)."""
    rng = np.random.default_rng(7)
    sigma, horizon = 1.5, 500
    m = rng.normal(-0.5, sigma, size=(60_000, 2))
    m -= m.mean(axis=0) - (-0.5)  # the population means are exactly equal
    s = separability(m, horizon, resamples=3000, seed=3)
    expected = (
        sigma / math.sqrt(math.pi * horizon) / abs(-0.5 + sigma / math.sqrt(math.pi * horizon))
    )
    assert s.hindsight == pytest.approx(expected, rel=0.08)
    assert s.wrong_at_horizon == pytest.approx(0.5)
    assert math.isinf(s.samples_to_rank)


def test_a_clear_winner_is_ranked_at_once_and_leaves_no_hindsight_gap() -> None:
    m = _two_arms(delta=1.0, sigma=0.1)
    s = separability(m, 2000, resamples=200)
    assert s.samples_to_rank < 1
    assert s.wrong_at_horizon < 1e-12
    assert abs(s.hindsight) < 1e-9


@pytest.mark.parametrize(
    ("rewards", "horizon", "match"),
    [
        (np.zeros((5,)), 10, "rewards should be"),
        (np.zeros((5, 1)), 10, "rewards should be"),
        (np.zeros((5, 2)), 0, "horizon should be"),
    ],
)
def test_bad_arguments_are_refused(rewards: np.ndarray, horizon: int, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        separability(rewards, horizon)


def test_audit_floor_charges_the_cold_start_and_the_audit_rate() -> None:
    # 200 audits, then 5 % of the other 1800 (90): 290 of 2000 decisions lose 0.5 each
    floor = audit_floor(-0.2, -0.7, -0.19, 2000, audits_to_trust=200, min_rate=0.05)
    assert floor == pytest.approx((-0.19 - (-0.2 - 290 / 2000 * 0.5)) / 0.19)
    # nothing to trust (the whole network is the best split): only hindsight is left
    assert audit_floor(-0.9, -0.9, -0.89, 2000, audits_to_trust=200, min_rate=0.05) == (
        pytest.approx(0.01 / 0.89)
    )
    # a stream shorter than the cold start is all audits
    assert audit_floor(1.0, 0.5, 1.0, 100, audits_to_trust=200, min_rate=0.05) == (
        pytest.approx(0.5)
    )
    with pytest.raises(ValueError, match="min_rate"):
        audit_floor(1.0, 0.5, 1.0, 100, audits_to_trust=200, min_rate=1.5)
