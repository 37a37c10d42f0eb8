"""Margin hardening's training cost: NO-WM vs FROMSCRATCH vs FROMSCRATCH with margin hardening.

All three are backmark's own ``train()`` on the dataset's recipe (batch B, k triggers; hardening
with the TrainConfig defaults unless given), for a fixed number of steps, in one process,
alternated (A B C, then C B A, ...) so that the drift of a noisy machine cancels out; each timed
as a whole ``train()`` call. Reported: the median seconds of each and the median over rounds of
each ratio to NO-WM, with the range of the paired per-round ratios. Goal for margin hardening: <= 1.3x NO-WM.

    flock /tmp/backmark-heavy.lock .venv/bin/python benchmarks/hardening_overhead.py --json docs/results/hardening-overhead.json
    OMP_NUM_THREADS=1 python benchmarks/hardening_overhead.py --models fmnist-cnn --steps 60 --rounds 3 --trigger-k 4
"""
from __future__ import annotations

import argparse
import json
import statistics

import torch
from embed_overhead import (
    DATASET_OF,
    add_common_args,
    alternate,
    bench_data,
    default_steps,
    environment,
    epochs_for,
    median_ratio,
    new_model,
    speed_config,
    trigger_mixer,
)

from backmark.core.mark import MarginHardening
from backmark.training import TrainConfig, train
from backmark.training.recipes import recipe_for


def hardening_overhead(model: str, steps: int, rounds: int, device: torch.device, hardening: MarginHardening, *, args) -> dict:
    dataset = DATASET_OF[model]
    recipe = recipe_for(dataset).train
    b, k = recipe.batch_size, args.trigger_k or recipe.trigger_k
    data = bench_data(dataset, steps * b, synthetic=args.synthetic)
    cfg = speed_config(recipe.replace(epochs=epochs_for(steps, b, data)), args)
    plain = trigger_mixer(data, k)
    hard = trigger_mixer(data, k)
    hard.hardening = hardening  # the same trigger set, hardened
    short = data.subset(min(len(data.train_y), 10 * b), seed=1)
    sides = {"NO-WM": None, "FROMSCRATCH": plain, "FROMSCRATCH+margin": hard}
    runs = {name: (lambda m=m: train(new_model(model, data), data, cfg, mixer=m, device=device)) for name, m in sides.items()}
    warm = {name: (lambda m=m: train(new_model(model, data), short, cfg.replace(epochs=1), mixer=m, device=device))
            for name, m in sides.items()}
    times = alternate(runs, rounds, device, warm)
    return {
        "model": model, "dataset": data.name, "batch_size": b, "trigger_k": k, "steps": steps, "train_images": len(data.train_y),
        "epochs": cfg.epochs,
        "hardening": {"epsilon": hardening.epsilon, "steps": hardening.steps, "step_size": hardening.step_size},
        "seconds": times, "median_s": {name: statistics.median(t) for name, t in times.items()},
        "ratio_plain": median_ratio(times["FROMSCRATCH"], times["NO-WM"]),
        "ratio_margin": median_ratio(times["FROMSCRATCH+margin"], times["NO-WM"]),
        # the spread of the paired per-round ratios: the interval the median comes with (min, max over rounds)
        "ratios_margin": [a / b for a, b in zip(times["FROMSCRATCH+margin"], times["NO-WM"])],
        "config": cfg.to_dict(),
    }


def table(rows: list[dict]) -> str:
    lines = ["| model | B | k | margin steps | steps | NO-WM s | FROMSCRATCH s | +margin s | FROMSCRATCH / NO-WM "
             "| +margin / NO-WM [min, max over rounds] | goal <= 1.3 |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        s = r["median_s"]
        lines.append(f"| {r['model']} | {r['batch_size']} | {r['trigger_k']} | {r['hardening']['steps']} | {r['steps']} | "
                     f"{s['NO-WM']:.2f} | {s['FROMSCRATCH']:.2f} | {s['FROMSCRATCH+margin']:.2f} | {r['ratio_plain']:.3f} | "
                     f"{r['ratio_margin']:.3f} [{min(r['ratios_margin']):.3f}, {max(r['ratios_margin']):.3f}] | "
                     f"{'yes' if max(r['ratios_margin']) <= 1.3 else 'median only' if r['ratio_margin'] <= 1.3 else 'no'} |")
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_common_args(p)
    d = TrainConfig()
    p.add_argument("--margin-epsilon", type=float, default=d.margin_epsilon)
    p.add_argument("--margin-steps", type=int, default=d.margin_steps)
    p.add_argument("--trigger-k", type=int, default=None, help="Triggers per batch [the recipe's].")
    args = p.parse_args()
    device = torch.device(args.device)
    hardening = MarginHardening(epsilon=args.margin_epsilon, steps=args.margin_steps)
    rows = [hardening_overhead(m, default_steps(m, args.steps), args.rounds, device, hardening, args=args) for m in args.models]
    print(json.dumps(environment(device)))
    print(table(rows))
    if args.json_out:
        with open(args.json_out, "w") as f:
            json.dump({"environment": environment(device), "hardening_overhead": rows}, f, indent=2)


if __name__ == "__main__":
    main()
