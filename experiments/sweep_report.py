"""The PRETRAINED sweep's runs: kept one a line (so an interrupted sweep continues), what a recipe
delivers, its cost, and the markdown page. ``experiments/pretrained_sweep.py`` makes the runs;
its ``--render`` turns a sweep's JSON into the page again.
"""

from __future__ import annotations

import json
import shlex
import statistics
from pathlib import Path


def final(run: dict) -> dict | None:
    """What the recipe delivers: the model after its cool-down, or where the rule stopped (hold 0); None if never 100%.
    A cool-down that lost a trigger does not deliver."""
    if run.get("cool"):
        c = run.get("cooled")
        return c if c is not None and c["trigger_acc"] >= 1.0 else None
    return run["holds"]["0"]


def cost_points(run: dict, hold: str, base_acc: float) -> float | None:
    r = final(run) if hold == "final" else run["holds"].get(hold)
    return None if r is None else 100 * (base_acc - r["test_acc"])


def table(runs: list[dict], base_acc: float, holds: list[int]) -> str:
    lines = [
        "| k | lr | layers | BN | seed | stop | steps | images | epochs of original | test acc | cost (points) |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in runs:
        head = f"| {r['k']} | {r['lr']} | {r['layers']} | {r.get('bn', 'batch')} | {r['seed']} |"
        rows = [(f"hold {h}", r["holds"][str(h)], str(h)) for h in (holds if not r.get("cool") else [0])]
        if r.get("cool"):
            rows.append((f"hold 0 + cool {r['cool']}", r.get("cooled"), "final"))
        for label, x, key in rows:
            if x is None:
                lines.append(f"{head} {label} | not reached in {r['checks'] * r['epoch_steps']} | | | | |")
                continue
            lost = " (a trigger lost)" if x.get("trigger_acc", 1.0) < 1.0 else ""
            cost = cost_points(r, key, base_acc)
            lines.append(
                f"{head} {label}{lost} | {x['steps']} | {x['images']} | {x['epochs_of_original']:.3f} | "
                f"{100 * x['test_acc']:.2f} | " + (f"{cost:+.2f} |" if cost is not None else "|")
            )
    return "\n".join(lines)


def report(doc: dict) -> str:
    """The markdown page of one sweep (docs/results/pretrained-sweep.md quotes it)."""
    o, base = doc["original"], doc["original_test_acc"]
    lines = [
        f"Dataset {doc['dataset']} ({doc['train_images']} training, {doc['test_images']} test images), model {doc['model']}; "
        f"the original training: {o['epochs']} epochs = {o['images']} images ({o['steps']} steps), "
        f"test accuracy {100 * base:.2f}%. "
        f"Embedding checks the triggers every {doc['epoch_steps']} steps; cost = original test accuracy - embedded test accuracy "
        f"(full test set), in points; 'epochs of original' = images processed / {doc['train_images']}.",
        "",
        "All recipes, seed 0:",
        "",
        table(doc["runs"], base, doc["holds"]),
        "",
    ]
    if doc["confirmed"]:
        lines += [
            f"The cheapest recipes within {doc['max_cost']} points at seed 0, with more seeds "
            "(median and worst over seeds; 'reached' counts the seeds at 100% trigger accuracy within the cap):",
            "",
            "| k | lr | layers | BN | stop | reached 100% | epochs of original, median (worst) | cost (points), median (worst) |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for c in doc["confirmed"]:
            r, x = c["recipe"], c["summary"]["final"]  # what the recipe delivers
            stop = f"hold 0 + cool {r['cool']}" if r.get("cool") else "hold 0"
            ep = f"{x['median_epochs']:.3f} ({x['worst_epochs']:.3f})" if "median_epochs" in x else ""
            cost = f"{x['median_cost']:+.2f} ({x['worst_cost']:+.2f})" if "median_cost" in x else ""
            lines.append(
                f"| {r['k']} | {r['lr']} | {r['layers']} | {r.get('bn', 'batch')} | {stop} | {x['reached']} | {ep} | {cost} |"
            )
    if doc.get("not_run"):
        lines += ["", "Not run (--cached-only: no run of these was made):", ""]
        lines += [f"- k {r['k']}, lr {r['lr']}, layers {r['layers']}, BN {r.get('bn', 'batch')}"
                  + (f", cool {r['cool']}" if r.get("cool") else "") + f", seed {r['seed']}" for r in doc["not_run"]]
    return "\n".join(lines) + "\n"


def summarise(runs: list[dict], holds: list[int], base_acc: float) -> dict:
    """Per hold: how many seeds reached 100%, and the median / worst images and cost over seeds."""
    out = {}
    for h in [*map(str, holds), "final"]:
        reached = [x for x in (final(r) if h == "final" else r["holds"][h] for r in runs) if x is not None]
        out[h] = {"reached": f"{len(reached)}/{len(runs)}"}
        if reached:
            costs = [100 * (base_acc - x["test_acc"]) for x in reached]
            ep = [x["epochs_of_original"] for x in reached]
            out[h].update(
                median_epochs=statistics.median(ep),
                worst_epochs=max(ep),
                median_cost=statistics.median(costs),
                worst_cost=max(costs),
            )
    return out


class RunCache:
    """Finished runs in ``WORK/runs.jsonl``, one line each, so an interrupted sweep continues where it stopped."""

    def __init__(self, work: Path, args):
        self.path = work / "runs.jsonl"
        self.settings = {"epoch_steps": args.epoch_steps, "holds": args.holds, "cap": args.cap, "check_test": args.check_test}
        self.done = {}
        if self.path.exists():
            for line in self.path.read_text().splitlines():
                r = json.loads(line)
                self.done[r["_key"]] = r

    def key(self, recipe: dict, seed: int) -> str:
        return json.dumps({**recipe, "seed": seed, **self.settings}, sort_keys=True)

    def has(self, recipe: dict, seed: int) -> bool:
        return self.key(recipe, seed) in self.done

    def run(self, recipe: dict, seed: int, fn) -> dict:
        key = self.key(recipe, seed)
        if key not in self.done:
            r = fn()
            r["_key"] = key
            with self.path.open("a") as f:
                f.write(json.dumps(r) + "\n")
            self.done[key] = r
        return self.done[key]


def command_line(args, explicit_model: bool) -> str:
    """The command that makes this sweep again (the options as given or defaulted; the recipe's model left out)."""
    words = []
    for k, v in vars(args).items():
        if v is None or v is False or (k == "model" and not explicit_model):
            continue
        words.append("--" + {"json_out": "json"}.get(k, k).replace("_", "-"))
        if v is not True:
            words += [shlex.quote(str(x)) for x in (v if isinstance(v, list) else [v])]
    return "python experiments/pretrained_sweep.py " + " ".join(words)

def hold_stop(epochs: list, hold: int) -> int | None:
    """The epoch at which ``--hold hold`` stops (the (hold+1)-th epoch at 100%), None if never."""
    full = [s.epoch for s in epochs if s.trigger_acc is not None and s.trigger_acc >= 1.0]
    return full[hold] if len(full) > hold else None
