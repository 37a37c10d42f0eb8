from fractions import Fraction

import pytest
from scipy.stats import binom

from backmark.core.stats import DEFAULT_ALPHA, binomial_tail, decide, null_rate, threshold


@pytest.mark.parametrize("n,L,expected", [(100, 10, 46), (100, 100, 20)])
def test_thresholds_at_2_pow_minus_64(n, L, expected):
    # SCHEME.md section 4: n=100, |L|=10 -> 46 matches; |L|=100 -> 20.
    assert threshold(n, Fraction(1, L), DEFAULT_ALPHA) == expected
    assert binom.sf(expected - 1, n, 1 / L) <= DEFAULT_ALPHA < binom.sf(expected - 2, n, 1 / L)


@pytest.mark.parametrize("x,n,p", [(0, 10, Fraction(1, 10)), (3, 10, Fraction(1, 10)), (46, 100, Fraction(1, 10)),
                                   (100, 100, Fraction(1, 10)), (7, 50, Fraction(3, 17)), (500, 1000, Fraction(1, 2))])
def test_tail_matches_scipy(x, n, p):
    exact = binomial_tail(x, n, p)
    assert float(exact) == pytest.approx(binom.sf(x - 1, n, float(p)), rel=1e-9)


def test_tail_edges():
    assert binomial_tail(0, 5, Fraction(1, 3)) == 1
    assert binomial_tail(6, 5, Fraction(1, 3)) == 0
    assert binomial_tail(5, 5, Fraction(1, 3)) == Fraction(1, 243)


def test_decide_and_log2():
    d = decide(100, 100, Fraction(1, 10))
    assert d.verified and d.log2_p_value == pytest.approx(-332.19, abs=0.01)
    d = decide(45, 100, Fraction(1, 10))
    assert not d.verified and d.threshold == 46
    with pytest.raises(ValueError):
        decide(1, 10, Fraction(1, 10), alpha=0)


def test_null_rate_for_given_labels():
    labels = [0] * 50 + [1] * 50
    assert null_rate(10) == Fraction(1, 10)
    # A model answering 0 everywhere matches half of these labels by chance.
    assert null_rate(10, labels, [0] * 100) == Fraction(1, 2)
    # Spread predictions: no higher than 1/|L|.
    assert null_rate(10, labels, list(range(10)) * 10) == Fraction(1, 10)
