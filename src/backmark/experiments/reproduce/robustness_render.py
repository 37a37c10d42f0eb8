"""The robustness results over seeds: the summary (``summarise``), report.md and robustness.png."""
from __future__ import annotations

import math
import statistics
from pathlib import Path


def _stats(values: list[float]) -> dict:
    return {"mean": statistics.fmean(values), "min": min(values), "max": max(values), "n": len(values)} if values else None


def _owned(row: dict) -> bool:
    """The row's verification is ownership evidence (the black-box exact test passes at alpha: docs/claims.md)."""
    return row["watermark"]["verdict"] == "ownership"


def summarise(res: dict) -> dict:
    """Per scheme (the marked models) and per (attack, scheme): means and ranges over seeds."""
    schemes = list(dict.fromkeys(r["scheme"] for r in res["victims"]))
    victims = {}
    for name in schemes:
        rows = [r for r in res["victims"] if r["scheme"] == name]
        victims[name] = {
            "seeds": len(rows),
            "test_acc": _stats([r["test_acc"] for r in rows]),
            "nowm_test_acc": _stats([r["nowm_test_acc"] for r in rows]),
            "accuracy_cost": _stats([r["accuracy_cost"] for r in rows]),
            "matches": _stats([r["watermark"]["matches"] for r in rows]),
            "verified": sum(_owned(r) for r in rows),
            "seconds": _stats([r["seconds"] for r in rows]),
            "time_vs_nowm": _stats([r["seconds"] / r["nowm_seconds"] for r in rows if r["nowm_seconds"]]),
        }
    attacks = []
    for label in dict.fromkeys(r["label"] for r in res["attacks"]):
        for name in schemes:
            rows = [r for r in res["attacks"] if r["label"] == label and r["scheme"] == name]
            if not rows:
                continue
            det = [r["detector"] for r in rows if r.get("detector")]
            attacks.append({
                "label": label, "attack": rows[0]["attack"], "scheme": name, "seeds": len(rows),
                "matches": _stats([r["watermark"]["matches"] for r in rows]),
                "n": rows[0]["watermark"]["n"], "threshold": rows[0]["watermark"]["threshold"],
                "verified": sum(_owned(r) for r in rows),
                "max_log2_p_value": max(r["watermark"]["log2_p_value"] for r in rows),
                "test_acc": _stats([r["test_acc"] for r in rows]),
                "cost_vs_nowm": _stats([r["nowm_test_acc"] - r["test_acc"] for r in rows]),
                "seconds": _stats([r["seconds"] for r in rows]),
                "trigger_flag_rate": _stats([d["trigger_flag_rate"] for d in det]),
                "test_flag_rate": _stats([d["test_flag_rate"] for d in det]),
            })
    return {"schemes": schemes, "victims": victims, "attacks": attacks}


def _range(st, scale: float = 1.0, fmt: str = ".0f") -> str:
    if st is None:
        return "n/a"
    if st["n"] == 1 or st["min"] == st["max"]:
        return f"{scale * st['mean']:{fmt}}"
    return f"{scale * st['mean']:{fmt}} [{scale * st['min']:{fmt}}, {scale * st['max']:{fmt}}]"


def _p(log2p: float) -> str:
    return f"2^{log2p:.0f}" if log2p < -10 else f"{2 ** log2p:.2g}"


def render_robustness(res: dict) -> str:
    summ = res.get("summary") or summarise(res)
    quick = " (QUICK MODE: small subsets, not a result)" if res["quick"] else ""
    seeds = [s["seed"] for s in res["seeds"]]
    lines = [f"# {res['name']}{quick}", ""]
    if res.get("description"):
        lines += [res["description"], ""]
    lines += [
        f"- {res.get('dataset', '?')}; model `{res['model']}`; device {res['device']}; seeds {seeds}",
        f"- backmark {res['backmark']}, git commit `{res['git_commit']}`, torch {res['torch']}"
        + (f", epochs capped at {res['max_epochs']}" if res.get("max_epochs") else ""),
        f"- alpha = 2^{math.log2(res['config']['alpha']):.0f}; every model of a seed trains without that seed's heldout "
        f"trigger images ({', '.join(str(s['excluded_trigger_images']) for s in res['seeds'])} left out)",
        f"- started {res['started']}, wall time {res.get('wall_seconds', 0):.0f} s"
        + (f"; config `{res['config_path']}`" if res.get("config_path") else ""),
        "",
        "Values are the mean over seeds, [min, max] when they differ. Matches: trigger labels the model answers, of n, "
        "black-box; ✓k/N: OWNERSHIP VERIFIED (the exact test passes at alpha) in k of N seeds; largest p: the weakest "
        "seed's p-value.",
        "",
        "## The marked models",
        "",
        "| scheme | test acc (%) | NO-WM (%) | cost (points) | matches | verified | train s | time vs NO-WM |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, v in summ["victims"].items():
        lines.append(f"| {name} | {_range(v['test_acc'], 100, '.2f')} | {_range(v['nowm_test_acc'], 100, '.2f')} | "
                     f"{_range(v['accuracy_cost'], 100, '+.2f')} | {_range(v['matches'])} | {v['verified']}/{v['seeds']} | "
                     f"{_range(v['seconds'])} | {_range(v['time_vs_nowm'], 1, '.2f')}x |")
    schemes = summ["schemes"]
    by = {(a["label"], a["scheme"]): a for a in summ["attacks"]}
    labels = list(dict.fromkeys(a["label"] for a in summ["attacks"]))
    lines += ["", "## Matches after each attack", "", "| attack | " + " | ".join(schemes) + " |", "|---|" + "---|" * len(schemes)]
    for label in labels:
        cells = []
        for name in schemes:
            a = by.get((label, name))
            cells.append("-" if a is None else f"{_range(a['matches'])}/{a['n']} {'✓' if a['verified'] == a['seeds'] else '✗'}"
                                                 f"{a['verified']}/{a['seeds']}, p <= {_p(a['max_log2_p_value'])}")
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    lines += ["", "## Test accuracy after each attack (%; cost versus NO-WM in points) and attack wall time", "",
              "| attack | " + " | ".join(schemes) + " |", "|---|" + "---|" * len(schemes)]
    for label in labels:
        cells = []
        for name in schemes:
            a = by.get((label, name))
            cells.append("-" if a is None else f"{_range(a['test_acc'], 100, '.1f')} ({_range(a['cost_vs_nowm'], 100, '+.1f')}); "
                                                 f"{_range(a['seconds'])} s")
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    det = [a for a in summ["attacks"] if a["trigger_flag_rate"] is not None]
    if det:
        lines += ["", "## Evasion: what the thief's detector flags", "",
                  "Flagged queries are answered at random. Test = the victim's test images (the detector's false-positive "
                  "rate on data like the thief's); triggers = the key's trigger images.", "",
                  "| detector | scheme | flags test images (%) | flags triggers (%) | triggers - test (points) | matches through it |",
                  "|---|---|---|---|---|---|"]
        for a in det:
            gap = a["trigger_flag_rate"]["mean"] - a["test_flag_rate"]["mean"]
            lines.append(f"| {a['label']} | {a['scheme']} | {_range(a['test_flag_rate'], 100, '.1f')} | "
                         f"{_range(a['trigger_flag_rate'], 100, '.1f')} | {100 * gap:+.1f} | {_range(a['matches'])}/{a['n']} |")
    return "\n".join(lines) + "\n"


def robustness_plot(res: dict, path, *, title: str) -> Path:
    """Mean matches per attack (bars, one per scheme) with the seeds' range, and the threshold at alpha."""
    from ..plots import DEFAULT_COLORS, _save, plt

    summ = res.get("summary") or summarise(res)
    schemes = summ["schemes"]
    labels = list(dict.fromkeys(a["label"] for a in summ["attacks"]))
    by = {(a["label"], a["scheme"]): a for a in summ["attacks"]}
    width = 0.8 / max(len(schemes), 1)
    fig, ax = plt.subplots(figsize=(min(18.0, max(7.0, 0.7 * len(labels) + 2)), 4.8), dpi=120)
    threshold = None
    for j, name in enumerate(schemes):
        xs, ys, lo, hi = [], [], [], []
        for i, label in enumerate(labels):
            a = by.get((label, name))
            if a is None:
                continue
            m = a["matches"]
            xs.append(i - 0.4 + width * (j + 0.5))
            ys.append(m["mean"])
            lo.append(m["mean"] - m["min"])
            hi.append(m["max"] - m["mean"])
            threshold = threshold or a["threshold"]
        ax.bar(xs, ys, width, yerr=[lo, hi], capsize=2, color=DEFAULT_COLORS[j % len(DEFAULT_COLORS)], edgecolor="black",
               linewidth=0.4, label=name, error_kw={"linewidth": 0.8})
    if threshold is not None:
        ax.axhline(threshold, color="red", linestyle="--", linewidth=1, label=f"threshold at alpha ({threshold})")
    ax.set_xticks(range(len(labels)), labels, rotation=30, ha="right", fontsize=7)
    ax.set_ylabel("trigger matches (of 100), mean and range over seeds")
    ax.set_ylim(0, 105)
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=7, loc="upper right", ncol=2)
    fig.tight_layout()
    return _save(fig, path)


def write_robustness_outputs(res: dict, out) -> list[Path]:
    from ...io.files import atomic_write_bytes

    out = Path(out)
    written = [atomic_write_bytes(out / "report.md", render_robustness(res).encode(), force=True, mode=0o644)]
    if res["attacks"]:
        written.append(robustness_plot(res, out / "robustness.png", title=f"{res['name']}: matches after each attack"))
    return written
