from fractions import Fraction

import pytest
from scipy.stats import beta, binom

from backmark.core.stats import ALPHA_FLOOR, DEFAULT_ALPHA, binomial_cdf, binomial_tail, clopper_pearson_upper, decide, threshold


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
    assert d.passed and d.log2_p_value == pytest.approx(-332.19, abs=0.01)
    d = decide(45, 100, Fraction(1, 10))
    assert not d.passed and d.threshold == 46
    with pytest.raises(ValueError):
        decide(1, 10, Fraction(1, 10), alpha=0)


@pytest.mark.parametrize("k,n,gamma", [(0, 100, 0.05), (12, 100, 1e-6), (120, 1000, 2**-65), (880, 1000, 2**-65), (3, 7, 0.3)])
def test_clopper_pearson_upper_is_the_exact_bound(k, n, gamma):
    u = clopper_pearson_upper(k, n, gamma)
    assert u.denominator <= 2**40 and binomial_cdf(k, n, u) <= gamma  # a valid bound, exactly checked
    assert binomial_cdf(k, n, u - Fraction(1, 2**40)) > gamma  # and the smallest one on its 2^-40 grid
    if gamma > 1e-300:
        assert float(u) == pytest.approx(beta.isf(gamma, k + 1, n - k), rel=1e-6)  # the textbook formula
    assert clopper_pearson_upper(n, n, gamma) == 1


def test_the_floor_is_the_default_and_grinding_proof():
    assert ALPHA_FLOOR == DEFAULT_ALPHA == 2.0**-64
