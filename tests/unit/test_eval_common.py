"""Figures every evaluation shares: rates and their intervals."""

import numpy as np
import pytest

from recagent.evals.common import bootstrap_interval, log_linear_fit, rate, wilson_interval

pytestmark = pytest.mark.unit


def test_the_wilson_interval_holds_the_rate_and_stays_inside_zero_and_one():
    assert rate(40, 50) == 0.8
    low, high = wilson_interval(40, 50)
    assert 0.66 < low < 0.8 < high < 0.9
    assert wilson_interval(10, 10) == [0.722, 1.0]  # ten of ten is not certainty
    assert wilson_interval(0, 5)[0] == 0.0 and wilson_interval(0, 0) is None
    assert wilson_interval(400, 500)[1] - wilson_interval(400, 500)[0] < high - low  # more users, narrower


def test_the_bootstrap_interval_holds_the_mean_and_widens_when_samples_share_a_dialogue():
    rng = np.random.default_rng(1)
    hits = (rng.random((400, 2)) < [0.2, 0.5]).astype(float)
    (lo1, hi1), (lo2, hi2) = bootstrap_interval(hits)
    assert lo1 < hits[:, 0].mean() < hi1 < lo2 < hits[:, 1].mean() < hi2
    assert 0.05 < hi1 - lo1 < 0.12  # about 4 standard errors of a rate of 0.2 over 400
    # the same hits, in 40 dialogues of 10 identical samples each: far fewer independent draws
    grouped = np.repeat(hits[:40], 10, axis=0)
    ((glo, ghi),) = bootstrap_interval(grouped[:, :1], groups=[str(k // 10) for k in range(400)])
    ((ilo, ihi),) = bootstrap_interval(grouped[:, :1])
    assert ghi - glo > 2 * (ihi - ilo)
    assert bootstrap_interval(hits, seed=3) == bootstrap_interval(hits, seed=3)
    assert bootstrap_interval(np.zeros((0, 2))) == [[0.0, 0.0], [0.0, 0.0]]


def test_the_log_linear_fit_finds_the_rate_per_doubling_and_where_it_reaches_a_target():
    fit = log_linear_fit([100, 200, 400], [0.10, 0.20, 0.30], target=0.5)
    assert fit["per_doubling"] == pytest.approx(0.1)
    assert fit["needed"] == 1600  # two more doublings after 400
    assert log_linear_fit([100, 200, 400], [0.3, 0.3, 0.3], target=0.5)["needed"] is None  # flat: never
    assert log_linear_fit([100, 200], [0.3, 0.2], target=0.5)["needed"] is None  # falling: never
    assert log_linear_fit([100, 200], [0.1, 0.1 + 1e-6], target=0.5)["needed"] is None  # only past 2^60
