"""Figures for the reproduction (matplotlib, Agg backend: files only, never a window).

- :func:`attack_bars`: the Figure 6 analogue, trigger accuracy after each attack, per
  marked model, measured the paper's way and black-box, with the alpha = 2^-64 threshold;
- :func:`pvalue_plot`: the p-values of the non-trivial-ownership null tests beside the
  owner's, and their empirical CDF against the uniform one.
"""
from __future__ import annotations

import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # before pyplot: no display, ever
import matplotlib.pyplot as plt

COLORS = {"FROMSCRATCH": "#1f77b4", "PRETRAINED": "#ff7f0e"}
DEFAULT_COLORS = ("#2ca02c", "#9467bd", "#8c564b", "#e377c2")


def _color(victim: str, i: int) -> str:
    return COLORS.get(victim, DEFAULT_COLORS[i % len(DEFAULT_COLORS)])


def attack_bars(rows: list[dict], path: str | Path, *, title: str, attacks: list[str] | None = None) -> Path:
    """Grouped bars: per attack label, per victim, the paper's measurement (solid) and black-box (hatched).

    ``rows``: the reproduction's attack rows ("label", "victim", "paper", "blackbox", "kept_layer").
    """
    labels = attacks or list(dict.fromkeys(r["label"] for r in rows))
    rows = [r for r in rows if r["label"] in labels]
    victims = list(dict.fromkeys(r["victim"] for r in rows))
    by = {(r["label"], r["victim"]): r for r in rows}
    series = [(v, view) for v in victims for view in ("paper", "blackbox")]
    width = 0.8 / max(len(series), 1)
    fig, ax = plt.subplots(figsize=(min(16.0, max(6.0, 0.85 * len(labels) + 2)), 4.5), dpi=120)
    threshold = None
    for s, (victim, view) in enumerate(series):
        xs, ys = [], []
        for i, label in enumerate(labels):
            r = by.get((label, victim))
            w = r and r.get(view)
            if w:
                xs.append(i - 0.4 + width * (s + 0.5))
                ys.append(100 * w["trigger_acc"])
                threshold = threshold or 100 * w["threshold"] / w["n"]
        name = f"{victim}, {'paper' if view == 'paper' else 'black-box'}"
        ax.bar(xs, ys, width, color=_color(victim, victims.index(victim)), alpha=1.0 if view == "paper" else 0.45,
               hatch=None if view == "paper" else "//", edgecolor="black", linewidth=0.4, label=name)
        for x, y in zip(xs, ys):
            ax.text(x, y + 1, f"{y:.0f}", ha="center", va="bottom", fontsize=6)
    if threshold is not None:
        ax.axhline(threshold, color="red", linestyle="--", linewidth=1, label=f"threshold at alpha=2^-64 ({threshold:.0f}%)")
    ax.set_xticks(range(len(labels)), labels, rotation=20 if len(labels) > 5 else 0, ha="right" if len(labels) > 5 else "center")
    ax.set_ylabel("trigger accuracy (%)")
    ax.set_ylim(0, 112)
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.18 if len(labels) > 5 else -0.1), ncol=3, frameon=False)
    fig.tight_layout()
    return _save(fig, path)


def pvalue_plot(ownership: dict, path: str | Path, *, title: str) -> Path:
    """Left: -log2 p of every null test (histogram) and of the owner's key on its marked
    models (markers), with alpha = 2^-64. Right: empirical CDF of the null p-values vs uniform."""
    groups = [
        ("owner's key vs models without it", ownership["owner_key_vs_clean"], "#2ca02c"),
        ("fresh keys vs marked models", ownership["fresh_keys_vs_marked"], "#1f77b4"),
        ("fresh keys vs models without it", ownership["fresh_keys_vs_clean"], "#9467bd"),
    ]
    owner = ownership["owner_key_vs_marked"]
    log_alpha = -math.log2(ownership["alpha"])
    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(12.5, 4.2), dpi=120, gridspec_kw={"width_ratios": [1.6, 1]})
    null_scores = [-r["log2_p_value"] for _, rs, _ in groups for r in rs]
    top = max([log_alpha * 1.15] + [v + 2 for v in null_scores])
    bins = [top * i / 80 for i in range(81)]
    for name, rs, color in groups:
        if rs:
            ax.hist([-r["log2_p_value"] for r in rs], bins=bins, color=color, alpha=0.6, label=f"{name} ({len(rs)})", log=True)
    # the owner's own tests are far to the right: one marker per distinct score, clipped to the edge
    by_score: dict[float, list[str]] = {}
    for r in owner:
        by_score.setdefault(round(-r["log2_p_value"], 1), []).append(r["model"])
    for i, (score, models) in enumerate(sorted(by_score.items())):
        where = "" if score <= top else ", off scale: drawn at the edge"
        ax.axvline(min(score, top), color="black", linewidth=2.5 - i * 0.8,
                   label=f"owner's key on {', '.join(models)}: p = 2^-{score:.0f}{where}")
    ax.set_xlim(0, top)
    ax.set_ylim(0.7, max(len(null_scores), 1) * 40)  # headroom above the bars for the legend
    ax.axvline(log_alpha, color="red", linestyle="--", label=f"alpha = 2^-{log_alpha:.0f}")
    ax.set_xlabel("-log2(p-value)  (larger = stronger evidence)")
    ax.set_ylabel("tests")
    ax.set_title(f"{title}: {ownership['false_claims']} false claims in {ownership['null_tests']} null tests", fontsize=9)
    ax.legend(fontsize=7, loc="upper right")
    pvals = sorted(r["p_value"] for _, rs, _ in groups for r in rs)
    if pvals:
        n = len(pvals)
        ax2.step(pvals, [(i + 1) / n for i in range(n)], where="post", label="null tests (empirical CDF)")
    ax2.plot([0, 1], [0, 1], color="gray", linestyle=":", label="uniform")
    ax2.set_xlabel("p-value")
    ax2.set_ylabel("share of null tests with p-value <= x")
    ax2.set_title("calibration (on or below the diagonal = valid test)", fontsize=9)
    ax2.legend(fontsize=7)
    fig.tight_layout()
    return _save(fig, path)


def _save(fig, path: str | Path) -> Path:
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(p)
    plt.close(fig)
    return p
