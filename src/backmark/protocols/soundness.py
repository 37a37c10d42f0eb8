"""Cut-and-choose arithmetic for public claims: the Fiat-Shamir challenge and the soundness bound.

    idx = challenge(vk.fingerprint, vk.size)          # the half of the elements a claim opens
    params = claim_parameters(vk.size, num_classes)   # thresholds for the opened and unopened halves

A cheating owner who mixes f fake elements (ones any model would match) into N escapes only if
the challenge opens none of them: C(N-f, h) / C(N, h) for h opened (:func:`escape_probability`).
:func:`soundness_error` maximises that times P[Bin(N-h-f, p0) >= t-f] over f, in exact rational
arithmetic; :func:`claim_parameters` picks the smallest unopened-half threshold t that keeps it
under the target (docs/public-verification.md). protocols.public builds and checks the claims.
"""
from __future__ import annotations

import hashlib
import math
import struct
from dataclasses import dataclass
from fractions import Fraction
from functools import lru_cache

from ..core.stats import DEFAULT_ALPHA, binomial_tail, log2, threshold
from ..errors import BackmarkError

_CHALLENGE_TAG = b"backmark/public/challenge/v1"


# -- the challenge (Fiat-Shamir) ----------------------------------------------------------

class _HashStream:
    """Uniform integers from SHA-256 in counter mode over a seed (rejection sampling: no bias)."""

    def __init__(self, seed: bytes):
        self.seed, self.counter, self.buf = seed, 0, b""

    def below(self, bound: int) -> int:
        limit = (1 << 64) - ((1 << 64) % bound)
        while True:
            if len(self.buf) < 8:
                self.buf += hashlib.sha256(self.seed + struct.pack(">Q", self.counter)).digest()
                self.counter += 1
            v, self.buf = int.from_bytes(self.buf[:8], "big"), self.buf[8:]
            if v < limit:
                return v % bound


def challenge(vk_fingerprint: str, total: int, *, extra: bytes = b"") -> list[int]:
    """The floor(total / 2) element indices to open, sorted: e = H(vk [, extra commitments]).

    A Fisher-Yates shuffle driven by SHA-256 of the key's fingerprint; ``extra`` binds
    further commitments published with the claim (the zero-knowledge Poseidon commitments).
    """
    if total < 2:
        raise ValueError("cut-and-choose needs at least 2 elements")
    seed = _CHALLENGE_TAG + bytes.fromhex(vk_fingerprint) + struct.pack(">I", total) + hashlib.sha256(extra).digest()
    rng = _HashStream(seed)
    order = list(range(total))
    for i in range(total - 1, 0, -1):
        j = rng.below(i + 1)
        order[i], order[j] = order[j], order[i]
    return sorted(order[: total // 2])


# -- soundness analysis ---------------------------------------------------------------------

def escape_probability(total: int, opened: int, fakes: int) -> Fraction:
    """P[a uniformly random ``opened``-subset of ``total`` misses all ``fakes`` fake elements]."""
    if fakes > total - opened:
        return Fraction(0)
    return Fraction(math.comb(total - fakes, opened), math.comb(total, opened))


@lru_cache(maxsize=256)
def soundness_error(total: int, opened: int, t: int, p0: Fraction) -> tuple[Fraction, int]:
    """(max over f of escape(f) * P[Bin(u - f, p0) >= t - f], the worst f), u = total - opened.

    The probability that a cheating owner with f fake elements, against a model NOT marked
    with the key, passes a test needing ``t`` matches on the unopened half: every fake
    must escape the challenge, and the genuine unopened elements must supply the rest by
    chance (each matches with probability p0). Exact rational arithmetic.
    """
    u = total - opened
    best, worst = Fraction(0), 0
    esc = Fraction(1)
    for f in range(u + 1):
        if f > 0:
            esc = esc * (u - f + 1) / (total - f + 1)  # escape(f) from escape(f - 1)
        if esc <= best:  # tails are <= 1: no larger f can beat the best so far
            break
        v = esc * binomial_tail(t - f, u - f, p0)
        if v > best:
            best, worst = v, f
    return best, worst


@dataclass(frozen=True)
class ClaimParameters:
    total: int
    opened: int
    num_classes: int
    target: float  # false-claim probability allowed per challenge, before grinding
    grinding_bits: int  # log2 of the key generations a cheater may try (Fiat-Shamir grinding)
    open_threshold: int  # matches needed on the opened half (black-box test)
    unopened_threshold: int  # matches (or zero-knowledge proofs) needed on the unopened half
    soundness_log2: float  # log2 of soundness_error at unopened_threshold
    worst_fakes: int

    @property
    def unopened(self) -> int:
        return self.total - self.opened

    @property
    def bound(self) -> float:
        return self.target / 2**self.grinding_bits

    @property
    def p0(self) -> Fraction:
        return Fraction(1, self.num_classes)

    def as_dict(self) -> dict:
        return {
            "total": self.total, "opened": self.opened, "unopened": self.unopened, "num_classes": self.num_classes,
            "target": self.target, "grinding_bits": self.grinding_bits, "open_threshold": self.open_threshold,
            "unopened_threshold": self.unopened_threshold, "soundness_log2": self.soundness_log2, "worst_fakes": self.worst_fakes,
        }


@lru_cache(maxsize=64)
def claim_parameters(total: int, num_classes: int, *, target: float = DEFAULT_ALPHA, grinding_bits: int = 0) -> ClaimParameters:
    """Thresholds for a claim over ``total`` elements with labels uniform over ``num_classes``.

    The opened half is tested with the exact binomial test at target / 2^grinding_bits; the
    unopened half gets the smallest threshold t whose soundness error (see
    :func:`soundness_error`) is at most that. Raises BackmarkError if no t reaches it.
    """
    if not 0 < target < 1 or grinding_bits < 0:
        raise ValueError("target must lie in (0, 1) and grinding_bits be >= 0")
    opened = total // 2
    u = total - opened
    p0 = Fraction(1, num_classes)
    bound = Fraction(target) / 2**grinding_bits
    t = threshold(u, p0, float(bound))  # the f = 0 term alone needs this much
    while t <= u:
        err, worst = soundness_error(total, opened, t, p0)
        if err <= bound:
            return ClaimParameters(total, opened, num_classes, target, grinding_bits, threshold(opened, p0, float(bound)), t, log2(err), worst)
        t += 1
    raise BackmarkError(
        f"{total} elements are too few for a false-claim probability of 2^{log2(bound):.0f}: "
        f"commit to more (e.g. backmark keygen --size 100 --sets 4 or more sets)"
    )


__all__ = ["ClaimParameters", "challenge", "claim_parameters", "escape_probability", "soundness_error"]
