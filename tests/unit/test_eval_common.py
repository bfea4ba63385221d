"""Figures every evaluation shares: rates and their intervals."""

import pytest

from recagent.evals.common import rate, wilson_interval

pytestmark = pytest.mark.unit


def test_the_wilson_interval_holds_the_rate_and_stays_inside_zero_and_one():
    assert rate(40, 50) == 0.8
    low, high = wilson_interval(40, 50)
    assert 0.66 < low < 0.8 < high < 0.9
    assert wilson_interval(10, 10) == [0.722, 1.0]  # ten of ten is not certainty
    assert wilson_interval(0, 5)[0] == 0.0 and wilson_interval(0, 0) is None
    assert wilson_interval(400, 500)[1] - wilson_interval(400, 500)[0] < high - low  # more users, narrower
