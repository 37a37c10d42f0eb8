"""The decision rule: an exact one-sided binomial test (SCHEME.md section 4).

Under the null hypothesis (the suspect model was not marked with this key) the number
of matches X among n opened triggers is Binomial(n, p0):

- labels derived from the key's hash: p0 = 1/|L| exactly, for any model (docs/claims.md);
- labels the owner chose have no exact null: p0 can only be calibrated from reference models
  the verifier supplies, as the exact Clopper-Pearson upper bound of their pooled match rate
  (:func:`clopper_pearson_upper`), with alpha split between the bound and the test.

The p-value P[X >= x] is computed in exact rational arithmetic (no floating-point tail
loss at alpha = 2^-64), then reported as a float and as log2. :data:`ALPHA_FLOOR` is the
weakest significance level at which a passing test is ownership evidence.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from fractions import Fraction

DEFAULT_ALPHA = 2.0**-64
ALPHA_FLOOR = 2.0**-64  # anyone can mint keys and grind: a weaker alpha is never ownership evidence
_CP_DENOMINATOR = 2**40  # Clopper-Pearson bounds are rounded UP to a multiple of 2^-40 (exactly checked)


def binomial_tail(x: int, n: int, p: Fraction) -> Fraction:
    """Exact P[X >= x] for X ~ Binomial(n, p), p rational."""
    if x <= 0:
        return Fraction(1)
    if x > n:
        return Fraction(0)
    p = Fraction(p)
    q = 1 - p
    # sum_{k=x}^{n} C(n,k) p^k q^(n-k) over the common denominator d^n (p = a/d, q = b/d).
    d = p.denominator
    a, b = p.numerator, q.numerator * (d // q.denominator)
    num = sum(math.comb(n, k) * a**k * b ** (n - k) for k in range(x, n + 1))
    return Fraction(num, d**n)


def threshold(n: int, p0: Fraction, alpha: float) -> int:
    """Smallest x with P[X >= x] <= alpha (n + 1 if no x qualifies)."""
    a = Fraction(alpha)
    lo, hi = 0, n + 1  # tail is non-increasing in x: binary search
    while lo < hi:
        mid = (lo + hi) // 2
        if binomial_tail(mid, n, p0) <= a:
            hi = mid
        else:
            lo = mid + 1
    return lo


def binomial_cdf(k: int, n: int, p: Fraction) -> Fraction:
    """Exact P[X <= k] for X ~ Binomial(n, p), p rational."""
    return 1 - binomial_tail(k + 1, n, p)


def _log_cdf(k: int, n: int, p: float) -> float:
    """log P[Bin(n, p) <= k] in floating point (log-sum-exp): a guide for the exact search below."""
    if p <= 0:
        return 0.0
    if p >= 1:
        return 0.0 if k >= n else -math.inf
    lp, lq = math.log(p), math.log1p(-p)
    terms = [math.lgamma(n + 1) - math.lgamma(j + 1) - math.lgamma(n - j + 1) + j * lp + (n - j) * lq for j in range(k + 1)]
    top = max(terms)
    return top + math.log(sum(math.exp(t - top) for t in terms))


def clopper_pearson_upper(k: int, n: int, gamma: float) -> Fraction:
    """The exact one-sided upper confidence bound, at confidence 1 - ``gamma``, of a binomial rate
    from ``k`` successes in ``n`` trials: the smallest p (a multiple of 2^-40, rounded up) with
    P[Bin(n, p) <= k] <= gamma, checked in exact rational arithmetic.
    """
    if not 0 <= k <= n or n < 1:
        raise ValueError(f"need 0 <= k <= n and n >= 1, got k={k}, n={n}")
    if not 0 < gamma < 1:
        raise ValueError(f"gamma must lie in (0, 1), got {gamma}")
    if k == n:
        return Fraction(1)
    target = math.log(gamma)
    lo, hi = k / n, 1.0  # the bound lies above the point estimate
    for _ in range(200):
        mid = (lo + hi) / 2
        if _log_cdf(k, n, mid) > target:
            lo = mid
        else:
            hi = mid
        if hi - lo < 2**-44:
            break
    num = min(_CP_DENOMINATOR, math.ceil(hi * _CP_DENOMINATOR))
    g = Fraction(gamma)
    while num < _CP_DENOMINATOR and binomial_cdf(k, n, Fraction(num, _CP_DENOMINATOR)) > g:
        num += 1 + num // 10**6  # floating point was a hair low: step up (exactly checked)
    while num > 1 and binomial_cdf(k, n, Fraction(num - 1, _CP_DENOMINATOR)) <= g:
        num -= 1  # and never above the smallest exact bound on this grid
    return Fraction(num, _CP_DENOMINATOR)


def log2(x: Fraction | float) -> float:
    """log2 of a probability, exact for tiny rationals (a Fraction's float would underflow to 0)."""
    f = Fraction(x)
    if f <= 0:
        return -math.inf
    return math.log2(f.numerator) - math.log2(f.denominator)


@dataclass(frozen=True)
class BinomialDecision:
    matches: int
    n: int
    p0: Fraction
    alpha: float
    threshold: int
    p_value: float
    log2_p_value: float

    @property
    def passed(self) -> bool:
        """The test rejects the null at alpha (matches >= threshold). Whether that is ownership
        evidence is the verdict's business (core.verify, docs/claims.md), not the test's."""
        return self.matches >= self.threshold

    def as_dict(self) -> dict:
        return {
            "matches": self.matches,
            "n": self.n,
            "p0": float(self.p0),
            "p0_exact": f"{self.p0.numerator}/{self.p0.denominator}",
            "alpha": self.alpha,
            "threshold": self.threshold,
            "p_value": self.p_value,
            "log2_p_value": self.log2_p_value,
            "passed": self.passed,
        }


def decide(matches: int, n: int, p0: Fraction, alpha: float = DEFAULT_ALPHA) -> BinomialDecision:
    """Apply the exact binomial test: verified iff P[X >= matches] <= alpha."""
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must lie in (0, 1), got {alpha}")
    if n <= 0:
        raise ValueError("no trigger elements to test")
    tail = binomial_tail(matches, n, p0)
    return BinomialDecision(
        matches=matches,
        n=n,
        p0=p0,
        alpha=alpha,
        threshold=threshold(n, p0, alpha),
        p_value=float(tail),
        log2_p_value=log2(tail),
    )
