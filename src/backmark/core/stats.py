"""The decision rule: an exact one-sided binomial test (SCHEME.md section 4).

Under the null hypothesis (the suspect model was not marked with this key) the number
of matches X among n opened triggers is Binomial(n, p0):

- labels derived from the key's hash: p0 = 1/|L| exactly, for any model;
- labels given by the owner (not verifiably random): p0 = max(1/|L|, sum_c a_c b_c) with
  a the model's predicted-class frequencies and b the label frequencies on the trigger set.

The p-value P[X >= x] is computed in exact rational arithmetic (no floating-point tail
loss at alpha = 2^-64), then reported as a float and as log2.
"""
from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass
from fractions import Fraction
from typing import Sequence

DEFAULT_ALPHA = 2.0**-64


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


def null_rate(num_classes: int, labels: Sequence[int] | None = None, predictions: Sequence[int] | None = None) -> Fraction:
    """p0: the chance a model unrelated to the key matches one trigger label.

    With ``labels`` and ``predictions`` given (labels not verifiably random), the rate is
    raised to sum_c a_c b_c when the model's prediction histogram overlaps the labels'.
    """
    base = Fraction(1, num_classes)
    if labels is None or predictions is None:
        return base
    n = len(labels)
    a, b = Counter(int(p) for p in predictions), Counter(int(y) for y in labels)
    overlap = sum(Fraction(a[c] * b[c], n * n) for c in b)
    return max(base, overlap)


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
    def verified(self) -> bool:
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
            "verified": self.verified,
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
