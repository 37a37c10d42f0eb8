"""Margin hardening's training cost: NO-WM vs FROMSCRATCH vs FROMSCRATCH with margin hardening.

The three arms are backmark's own ``train()`` on the dataset's recipe (batch B, k triggers; margin
hardening with the TrainConfig defaults unless given), each with its own model and data, called
again and again for one short epoch of ``--steps`` steps, in a random order each round (paired,
interleaved: :mod:`_harness`); the timed part is the training steps themselves (``StepClock``, as in
``embed_overhead.py``): drawing the batch, appending the triggers, the hardening's ascent steps on
them, forward, backward, optimizer step. Reported: each ratio to NO-WM with its 95% interval, in
wall and CPU time. The claim: margin hardening costs at most 1.3x NO-WM, to within +-5%.

    flock /tmp/backmark-heavy.lock python benchmarks/hardening_overhead.py --json out.json
    OMP_NUM_THREADS=1 python benchmarks/hardening_overhead.py --models fmnist-cnn --trigger-k 8 --margin-epsilon 0.03
"""
from __future__ import annotations

import argparse
import json
import time

import torch
from _harness import compare, environment, interleave, interval_text, rounds_of, use_malloc, verdict_both
from embed_overhead import DATASET_OF, STEPS, add_common_args, bench_data, new_model, speed_config, steps_arm, trigger_mixer

from backmark.core.mark import MarginHardening
from backmark.training import TrainConfig
from backmark.training.recipes import recipe_for

TARGET, RESOLUTION = 1.3, 0.05


def hardening_overhead(model: str, steps: int, device: torch.device, hardening: MarginHardening, *, args) -> dict:
    dataset = DATASET_OF[model]
    recipe = speed_config(recipe_for(dataset).train, args)
    b, k = recipe.batch_size, args.trigger_k or recipe.trigger_k
    data = bench_data(dataset, 4 * steps * b, synthetic=args.synthetic)
    cfg = recipe.replace(epochs=1, epoch_steps=steps, schedule="constant", lr=recipe.lr / 10)  # constant lr: every call alike
    plain = trigger_mixer(data, k)
    hard = trigger_mixer(data, k)
    hard.hardening = hardening  # the same kind of trigger set, hardened
    calls = {"NO-WM": [], "FROMSCRATCH": [], "FROMSCRATCH+margin": []}
    mixers = {"NO-WM": None, "FROMSCRATCH": plain, "FROMSCRATCH+margin": hard}
    arms = {name: steps_arm(new_model(model, data), data, cfg, m, device, calls[name]) for name, m in mixers.items()}
    started = time.perf_counter()
    times = interleave(arms, baseline="NO-WM", resolution=RESOLUTION, **rounds_of(args), device=device, seed=1)
    return {
        "model": model, "dataset": data.name, "batch_size": b, "trigger_k": k, "steps_per_unit": steps,
        "rounds": len(times["NO-WM"]), "seconds": time.perf_counter() - started, "target": TARGET, "resolution": RESOLUTION,
        "hardening": {"epsilon": hardening.epsilon, "steps": hardening.steps, "step_size": hardening.step_size},
        "plain": compare(times, "FROMSCRATCH", "NO-WM"),
        "margin": compare(times, "FROMSCRATCH+margin", "NO-WM"),
        "verdict": verdict_both(times, "FROMSCRATCH+margin", "NO-WM", target=TARGET, resolution=RESOLUTION),
        "samples": {a: [[t.wall, t.cpu] for t in ts] for a, ts in times.items()},
        "config": cfg.to_dict(),
    }


def markdown(rows: list[dict]) -> str:
    lines = ["| model | B | k | margin steps | steps x rounds | FROMSCRATCH / NO-WM, wall [95%] | +margin / NO-WM, wall [95%] "
             "| +margin, CPU [95%] | verdict (<= 1.3 to +-5%) |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['model']} | {r['batch_size']} | {r['trigger_k']} | {r['hardening']['steps']} | "
                     f"{r['steps_per_unit']} x {r['rounds']} | {interval_text(r['plain']['wall'])} | "
                     f"{interval_text(r['margin']['wall'])} | {interval_text(r['margin']['cpu'])} | {r['verdict']} |")
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_common_args(p, ["fmnist-cnn"])
    d = TrainConfig()
    p.add_argument("--margin-epsilon", type=float, default=d.margin_epsilon)
    p.add_argument("--margin-steps", type=int, default=d.margin_steps)
    p.add_argument("--trigger-k", type=int, default=None, help="Triggers per batch [the recipe's].")
    args = p.parse_args()
    use_malloc(args.system_malloc)
    device = torch.device(args.device)
    hardening = MarginHardening(epsilon=args.margin_epsilon, steps=args.margin_steps)
    rows = [hardening_overhead(m, args.steps or STEPS[m], device, hardening, args=args) for m in args.models]
    result = {"environment": environment(device), "hardening_overhead": rows}
    print(json.dumps(result["environment"]))
    print(markdown(rows))
    if args.json_out:
        with open(args.json_out, "w") as f:
            json.dump(result, f, indent=1)


if __name__ == "__main__":
    main()
