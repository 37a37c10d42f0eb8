"""What keeping freed memory saves: training steps with backmark's malloc setting over glibc's default.

The setting (``backmark.training.memory.keep_freed_memory``) is the whole process's, so the two
arms cannot share one process: each round starts one fresh process per arm, in a random order,
and each process times a short ``train()`` epoch of the dataset's recipe on synthetic images of its
shape (FROMSCRATCH, a fresh key's triggers mixed in), after one warm-up epoch, and counts the minor
page faults during it. The ratio keep / default is the geometric mean over rounds with its paired
95% interval (:mod:`_harness`).

    flock /tmp/backmark-heavy.lock python benchmarks/malloc_reuse.py --threads 1 --json docs/results/malloc-reuse.json \
        --md docs/results/malloc-reuse.md
"""

from __future__ import annotations

import argparse
import json
import random
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

ARMS = ("keep", "default")
STEPS = {"fmnist-cnn": 12, "cifar-fast": 6}


def child(model_name: str, steps: int, keep: bool, threads: int) -> dict:
    """One arm's process: warm-up epoch, then one timed epoch of ``steps`` steps."""
    import torch
    from embed_overhead import DATASET_OF, StepClock, bench_data, new_model, trigger_mixer

    from backmark.training import train
    from backmark.training.memory import keep_freed_memory, keeps_freed_memory
    from backmark.training.recipes import recipe_for

    if keep:
        keep_freed_memory()
    torch.set_num_threads(threads)
    dataset = DATASET_OF[model_name]
    recipe = recipe_for(dataset).train
    data = bench_data(dataset, 2 * steps * recipe.batch_size, synthetic=True)
    cfg = recipe.replace(epochs=1, epoch_steps=steps, schedule="constant", lr=recipe.lr / 10)
    model, mixer, device = new_model(model_name, data), trigger_mixer(data, recipe.trigger_k), torch.device("cpu")
    train(model, data, cfg, mixer=mixer, device=device)  # warm-up
    clock = StepClock(device)
    faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    train(model, data, cfg, mixer=mixer, device=device, reporter=clock)
    t = clock.timing()
    return {"wall": t.wall, "cpu": t.cpu, "minor_faults": resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults,
            "kept": keeps_freed_memory(), "steps": steps, "batch": recipe.batch_size + recipe.trigger_k}


def run_child(model_name: str, steps: int, arm: str, threads: int) -> dict:
    cmd = [sys.executable, __file__, "--child", arm, "--models", model_name, "--steps", str(steps), "--threads", str(threads)]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True, timeout=900, cwd=Path(__file__).parent)
    return json.loads(out.stdout.strip().splitlines()[-1])


def measure(model_name: str, steps: int, rounds: int, threads: int) -> dict:
    from _harness import ratio_interval

    samples = {a: [] for a in ARMS}
    for r in range(rounds):
        order = list(ARMS)
        random.Random(r).shuffle(order)
        for arm in order:
            samples[arm].append(run_child(model_name, steps, arm, threads))
    if not all(s["kept"] for s in samples["keep"]) or any(s["kept"] for s in samples["default"]):
        raise SystemExit("the keep arm did not keep freed memory (not glibc?): nothing to compare")
    wall = ratio_interval([s["wall"] for s in samples["keep"]], [s["wall"] for s in samples["default"]])
    cpu = ratio_interval([s["cpu"] for s in samples["keep"]], [s["cpu"] for s in samples["default"]])
    per_step = {a: 1000 * statistics.median(s["wall"] for s in samples[a]) / (steps - 1) for a in ARMS}
    faults = {a: statistics.median(s["minor_faults"] / (steps - 1) for s in samples[a]) for a in ARMS}
    return {"model": model_name, "steps": steps, "batch": samples["keep"][0]["batch"], "rounds": rounds,
            "ms_per_step": per_step, "minor_faults_per_step": faults,
            "wall": wall.as_dict(), "cpu": cpu.as_dict(), "samples": samples}


def markdown(doc: dict) -> str:
    from _harness import interval_text

    lines = [
        f"Command: `{doc['command']}`, {doc['seconds']:.0f} s, {doc['environment']['date']}; torch "
        f"{doc['environment']['torch']}, {doc['threads']} thread(s), load average at the start "
        f"{doc['environment']['load_average_at_start'][0]:.1f}.",
        "",
        "| model | batch (B + k) | steps x rounds | ms/step, default | ms/step, kept | kept / default, wall [95%] | CPU [95%] | "
        "minor faults/step, default | kept |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in doc["rows"]:
        lines.append(
            f"| {r['model']} | {r['batch']} | {r['steps']} x {r['rounds']} | {r['ms_per_step']['default']:.1f} | "
            f"{r['ms_per_step']['keep']:.1f} | {interval_text(r['wall'])} | {interval_text(r['cpu'])} | "
            f"{r['minor_faults_per_step']['default']:,.0f} | {r['minor_faults_per_step']['keep']:,.0f} |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--models", nargs="+", default=list(STEPS), choices=sorted(STEPS))
    p.add_argument("--steps", type=int, default=None, help="Timed steps per process [per model, see STEPS].")
    p.add_argument("--rounds", type=int, default=8)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--json", dest="json_out", default=None)
    p.add_argument("--md", default=None)
    p.add_argument("--child", choices=ARMS, default=None, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        m = args.models[0]
        print(json.dumps(child(m, args.steps or STEPS[m], args.child == "keep", args.threads)))
        return
    from _harness import environment

    started = time.perf_counter()
    env = environment()
    rows = [measure(m, args.steps or STEPS[m], args.rounds, args.threads) for m in args.models]
    doc = {"command": "python benchmarks/malloc_reuse.py " + " ".join(sys.argv[1:]), "environment": env,
           "threads": args.threads, "seconds": time.perf_counter() - started, "rows": rows}
    print(markdown(doc))
    if args.json_out:
        Path(args.json_out).write_text(json.dumps(doc, indent=1))
    if args.md:
        Path(args.md).write_text(markdown(doc))


if __name__ == "__main__":
    main()
