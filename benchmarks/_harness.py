"""Paired, interleaved timing with a confidence interval on every ratio (shared by the benchmarks).

On a shared, noisy machine two runs minutes apart differ by more than the few percent a
benchmark is meant to resolve. What makes a ratio stable is measuring its two sides together:

- every round runs each arm once, in a fresh random order (seeded), so slow spells of the
  machine fall on all arms alike; the first ``warmup`` rounds are discarded;
- a ratio is computed per round (the pair), and the interval is a paired Student-t interval on
  the log ratios: ``exp(mean +- t * sd / sqrt(n))``, i.e. on the geometric-mean ratio;
- rounds continue (at least ``min_rounds``, at most ``max_rounds`` or ``budget_s`` seconds) until
  every ratio's interval is within the resolution the benchmark claims;
- each unit is timed in wall seconds and in this process's CPU seconds (``time.process_time``:
  every thread of this process, none of another's), reported side by side;
- a verdict is given where the interval settles it: wholly on one side of the target ("meets" /
  "misses", adding that the interval is wider than the resolution claimed where it is); an interval
  across the target is "inconclusive" when narrower than the resolution, else "unresolved", with
  the interval, never a bare ratio.

    arms = {"NO-WM": run_a, "FROMSCRATCH": run_b}          # each: () -> None, or () -> Timing
    times = interleave(arms, baseline="NO-WM", resolution=0.01, budget_s=120)
    iv = ratio_interval(wall(times["FROMSCRATCH"]), wall(times["NO-WM"]))
    verdict(iv, target=1.03, resolution=0.01)               # 'meets <= 1.03' / 'misses' / 'unresolved ...'
"""

from __future__ import annotations

import math
import os
import platform
import random
import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass

import torch

from backmark.training.memory import keep_freed_memory, keeps_freed_memory

# Two-sided 95% Student-t quantiles t(0.975, df) for df = 1..30; beyond, the normal quantile
# plus the first term of its expansion in 1/df (error < 0.002 for df > 30).
_T975 = [
    12.706,
    4.303,
    3.182,
    2.776,
    2.571,
    2.447,
    2.365,
    2.306,
    2.262,
    2.228,
    2.201,
    2.179,
    2.160,
    2.145,
    2.131,
    2.120,
    2.110,
    2.101,
    2.093,
    2.086,
    2.080,
    2.074,
    2.069,
    2.064,
    2.060,
    2.056,
    2.052,
    2.048,
    2.045,
    2.042,
]


def t975(df: int) -> float:
    return _T975[df - 1] if df <= 30 else 1.95996 + 2.4 / df


@dataclass(frozen=True)
class Timing:
    """One timed unit: wall seconds and this process's CPU seconds."""

    wall: float
    cpu: float


def timed(fn: Callable[[], object], device: torch.device | None = None) -> Timing:
    """Time ``fn()``; if it returns a Timing (it timed its own core), that one is kept."""
    sync(device)
    w, c = time.perf_counter(), time.process_time()
    out = fn()
    sync(device)
    if isinstance(out, Timing):
        return out
    return Timing(time.perf_counter() - w, time.process_time() - c)


def sync(device: torch.device | None) -> None:
    if device is not None and device.type == "cuda":
        torch.cuda.synchronize(device)


@dataclass(frozen=True)
class Interval:
    """A ratio (geometric mean over pairs) and its 95% interval."""

    ratio: float
    lo: float
    hi: float
    pairs: int

    @property
    def half_width(self) -> float:
        """Half the interval's width, relative to the ratio (0.01 = +-1%)."""
        return (self.hi - self.lo) / 2 / self.ratio

    def text(self, digits: int = 3) -> str:
        return f"{self.ratio:.{digits}f} [{self.lo:.{digits}f}, {self.hi:.{digits}f}]"

    def as_dict(self) -> dict:
        return {**asdict(self), "half_width": self.half_width}


def ratio_interval(num: list[float], den: list[float]) -> Interval:
    """The paired ratio num / den with a t-interval on the per-pair log ratios."""
    if len(num) != len(den) or len(num) < 2:
        raise ValueError(f"a paired interval needs at least 2 pairs of equal count, got {len(num)} and {len(den)}")
    logs = [math.log(a / b) for a, b in zip(num, den)]
    m, n = statistics.fmean(logs), len(logs)
    h = t975(n - 1) * statistics.stdev(logs) / math.sqrt(n)
    return Interval(math.exp(m), math.exp(m - h), math.exp(m + h), n)


def median_interval(xs: list[float]) -> tuple[float, float, float]:
    """(median, lo, hi): a distribution-free 95% interval for the median from order statistics."""
    s, n = sorted(xs), len(xs)
    # the largest j with P(Binomial(n, 1/2) < j) <= 2.5%: then [x_(j), x_(n+1-j)] covers the median with >= 95%
    cdf, j = 0.0, 0
    while j < n and cdf + math.comb(n, j) / 2**n <= 0.025:
        cdf += math.comb(n, j) / 2**n
        j += 1
    lo, hi = (s[j - 1], s[n - j]) if j >= 1 else (s[0], s[-1])
    return statistics.median(s), lo, hi


def verdict(iv: Interval, *, target: float | None, resolution: float, direction: str = "<=") -> str:
    """'meets'/'misses' where the interval lies on one side of ``target`` (noting an interval wider than the
    resolution claimed); else 'inconclusive' (a narrow interval across it) or 'unresolved' (a wide one)."""
    wide = iv.half_width > resolution
    note = f"the interval is +-{100 * iv.half_width:.1f}%, wider than the +-{100 * resolution:g}% claimed"
    if target is None:
        return f"unresolved: {note}" if wide else f"resolved to +-{100 * iv.half_width:.1f}%"
    ok, bad = (iv.hi <= target, iv.lo > target) if direction == "<=" else (iv.lo >= target, iv.hi < target)
    if ok or bad:
        return f"{'meets' if ok else 'misses'} {direction} {target:g}" + (f" (but {note})" if wide else "")
    return f"unresolved: {note}" if wide else f"inconclusive: the interval straddles {target:g}"


def verdict_both(
    times: dict[str, list[Timing]], arm: str, baseline: str, *, target: float | None, resolution: float, direction: str = "<="
) -> str:
    """The verdict in wall time and in CPU time (for work done in this process only: CPU time is what a
    busy machine disturbs least, since waiting for a core costs wall time but no CPU time)."""
    w = verdict(
        ratio_interval(wall(times[arm]), wall(times[baseline])), target=target, resolution=resolution, direction=direction
    )
    c = verdict(ratio_interval(cpu(times[arm]), cpu(times[baseline])), target=target, resolution=resolution, direction=direction)
    return f"wall: {w}; CPU: {c}"


def rounds_of(args) -> dict:
    """A benchmark's --min-rounds, --max-rounds and --budget as :func:`interleave`'s keywords."""
    return {"min_rounds": args.min_rounds, "max_rounds": args.max_rounds, "budget_s": args.budget}


def interleave(
    arms: dict[str, Callable[[], object]],
    *,
    baseline: str | None = None,
    resolution: float | None = None,
    warmup: int = 1,
    min_rounds: int = 5,
    max_rounds: int = 60,
    budget_s: float = 60.0,
    seed: int = 0,
    device: torch.device | None = None,
) -> dict[str, list[Timing]]:
    """Timings per arm, one per round, arms in a random order each round; warm-up rounds dropped.

    Stops after ``max_rounds``, or once ``budget_s`` has passed (at least ``min_rounds``), or once every
    arm's wall-time ratio to ``baseline`` is resolved to ``resolution`` (after ``min_rounds``).
    """
    rng = random.Random(seed)
    names = list(arms)
    times: dict[str, list[Timing]] = {name: [] for name in names}
    started = time.perf_counter()
    for r in range(warmup + max_rounds):
        order = names[:]
        rng.shuffle(order)
        for name in order:
            t = timed(arms[name], device)
            if r >= warmup:
                times[name].append(t)
        done = r + 1 - warmup
        if done >= min_rounds:
            if time.perf_counter() - started > budget_s:
                break
            if (
                baseline is not None
                and resolution is not None
                and all(
                    ratio_interval(wall(times[a]), wall(times[baseline])).half_width <= resolution for a in names if a != baseline
                )
            ):
                break
    return times


def wall(ts: list[Timing]) -> list[float]:
    return [t.wall for t in ts]


def cpu(ts: list[Timing]) -> list[float]:
    return [t.cpu for t in ts]


def compare(times: dict[str, list[Timing]], arm: str, baseline: str) -> dict:
    """Wall and CPU ratios of ``arm`` over ``baseline`` with their intervals, and each side's median."""
    return {
        "wall": ratio_interval(wall(times[arm]), wall(times[baseline])).as_dict(),
        "cpu": ratio_interval(cpu(times[arm]), cpu(times[baseline])).as_dict(),
        "median_wall_s": {arm: statistics.median(wall(times[arm])), baseline: statistics.median(wall(times[baseline]))},
        "median_cpu_s": {arm: statistics.median(cpu(times[arm])), baseline: statistics.median(cpu(times[baseline]))},
    }


def interval_text(d: dict, digits: int = 3) -> str:
    return f"{d['ratio']:.{digits}f} [{d['lo']:.{digits}f}, {d['hi']:.{digits}f}]"


def use_malloc(system: bool) -> None:
    """Benchmark what the ``backmark`` command runs: malloc keeping freed memory (training/memory.py),
    unless ``system`` (``--system-malloc``: glibc's default, to measure what the setting saves)."""
    if not system:
        keep_freed_memory()


def environment(device: torch.device | None = None) -> dict:
    env = {
        "torch": torch.__version__,
        "python": platform.python_version(),
        "threads": torch.get_num_threads(),
        "cpus": os.cpu_count(),
        "machine": platform.machine(),
        "load_average_at_start": list(os.getloadavg()),
        "malloc": "keeps freed memory (backmark's setting)" if keeps_freed_memory() else "the C library's default",
        "date": time.strftime("%Y-%m-%d %H:%M %Z"),
    }
    if device is not None and device.type == "cuda":
        env["gpu"] = torch.cuda.get_device_name(device)
    return env


__all__ = [
    "Interval",
    "Timing",
    "compare",
    "cpu",
    "environment",
    "interleave",
    "interval_text",
    "median_interval",
    "ratio_interval",
    "sync",
    "t975",
    "timed",
    "use_malloc",
    "verdict",
    "verdict_both",
    "wall",
]
