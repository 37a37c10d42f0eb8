"""Embedding overhead: FROMSCRATCH (k trigger images appended to every batch) vs NO-WM.

Both sides are backmark's own ``train()`` on the dataset's recipe (batch B, k triggers),
for a fixed number of steps, in one process, alternated (A B, then B A, ...) so that the
drift of a noisy machine cancels out. Each side is timed as a whole ``train()`` call: the
steps, then the end-of-epoch evaluation on the test subset (and, for FROMSCRATCH, on the
trigger set). Reported: the median seconds of each and the median over rounds of the
ratio FROMSCRATCH / NO-WM. Goal <= 1.05; the ideal is (B + k) / B, the extra images.

    flock /tmp/backmark-heavy.lock .venv/bin/python benchmarks/embed_overhead.py
    python benchmarks/embed_overhead.py --device cuda --synthetic --steps 400 --json out.json   # on a GPU

The helpers here (data, keys, alternation, environment) are shared with
``train_throughput.py``, which runs this comparison too.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import time
from collections.abc import Callable

import torch

from backmark.core.keygen import keygen
from backmark.core.mark import TriggerMixer
from backmark.crypto import OwnerKey
from backmark.data import Dataset, load_dataset
from backmark.models import create_model
from backmark.training import TrainConfig, train
from backmark.training.recipes import recipe_for

# model -> the dataset it is benchmarked on
DATASET_OF = {"fmnist-cnn": "fashion-mnist", "cifar-small": "cifar10-jpg", "resnet18-cifar": "cifar10-jpg"}
SHAPES = {"fashion-mnist": (1, 28, 28), "cifar10-jpg": (3, 32, 32)}
TEST_SIZE = 200  # test images scored at the end of each timed run (with 100 triggers: ~1% of a run's work)


def bench_data(dataset: str, n_train: int, *, synthetic: bool, seed: int = 0) -> Dataset:
    """``n_train`` training images of ``dataset`` (the real files, or random pixels of its shape).

    Speed does not depend on pixel values, so ``synthetic`` serves where the files are absent (a GPU box).
    """
    if synthetic:
        g = torch.Generator().manual_seed(seed)
        shape = SHAPES[dataset]
        x = torch.randint(0, 256, (n_train + TEST_SIZE, *shape), dtype=torch.uint8, generator=g)
        y = torch.randint(0, 10, (n_train + TEST_SIZE,), generator=g)
        c = shape[0]
        return Dataset(f"{dataset} (synthetic)", x[:n_train], y[:n_train], x[n_train:], y[n_train:],
                       tuple(str(i) for i in range(10)), (0.5,) * c, (0.25,) * c)
    full = load_dataset(dataset, test_size=TEST_SIZE, seed=seed)
    return full.subset(min(n_train, len(full.train_y)), seed=seed, test_size=None)


def trigger_mixer(data: Dataset, k: int, *, n: int = 100, seed: int = 0) -> TriggerMixer:
    """A mixer over a fresh key's n abstract trigger images (derived labels), as FROMSCRATCH uses."""
    mk, _ = keygen(input_shape=data.input_shape, num_classes=data.num_classes, owner_key=OwnerKey.generate(), set_size=n)
    return TriggerMixer.from_key(mk, k=k, seed=seed)


def new_model(name: str, data: Dataset, seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return create_model(name, num_classes=data.num_classes, input_shape=data.input_shape, mean=data.mean, std=data.std)


def epochs_for(steps: int, batch_size: int, data: Dataset) -> int:
    return max(1, math.ceil(steps * batch_size / len(data.train_y)))


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn: Callable[[], object], device: torch.device) -> float:
    sync(device)
    t0 = time.perf_counter()
    fn()
    sync(device)
    return time.perf_counter() - t0


def alternate(runs: dict[str, Callable[[], object]], rounds: int, device: torch.device, warmup: dict | None = None) -> dict[str, list[float]]:
    """Seconds of each run, ``rounds`` times, in alternating order; each is warmed up once first (untimed)."""
    for name, fn in (warmup or runs).items():
        fn()
    times: dict[str, list[float]] = {name: [] for name in runs}
    names = list(runs)
    for r in range(rounds):
        for name in names if r % 2 == 0 else names[::-1]:
            times[name].append(timed(runs[name], device))
    return times


def median_ratio(num: list[float], den: list[float]) -> float:
    return statistics.median(a / b for a, b in zip(num, den))


def environment(device: torch.device) -> dict:
    env = {"torch": torch.__version__, "python": platform.python_version(), "device": str(device)}
    if device.type == "cuda":
        env["gpu"] = torch.cuda.get_device_name(device)
    else:
        env["cpu"] = f"{os.cpu_count()} cores ({platform.machine()}), torch threads {torch.get_num_threads()}"
    return env


def speed_config(cfg: TrainConfig, args) -> TrainConfig:
    return cfg.replace(precision=args.precision, compile=args.compile, channels_last=not args.no_channels_last)


def add_common_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--models", nargs="+", default=["fmnist-cnn", "cifar-small"], choices=sorted(DATASET_OF))
    p.add_argument("--steps", type=int, default=None, help="Training steps per timed run [per model: fmnist-cnn 100, others 40].")
    p.add_argument("--rounds", type=int, default=3, help="Timed runs of each side, alternated.")
    p.add_argument("--device", default="cpu")
    p.add_argument("--synthetic", action="store_true", help="Random pixels of the dataset's shape instead of its files.")
    p.add_argument("--precision", choices=["fp32", "bf16"], default="fp32")
    p.add_argument("--compile", choices=["auto", "on", "off"], default="off")
    p.add_argument("--no-channels-last", action="store_true")
    p.add_argument("--json", dest="json_out", default=None, help="Also write the results here.")


def default_steps(model: str, steps: int | None) -> int:
    return steps if steps is not None else (100 if model == "fmnist-cnn" else 40)


def embed_overhead(model: str, steps: int, rounds: int, device: torch.device, *, synthetic: bool, args) -> dict:
    """NO-WM vs FROMSCRATCH on the model's recipe: seconds per run and their ratio."""
    dataset = DATASET_OF[model]
    recipe = recipe_for(dataset).train
    b, k = recipe.batch_size, recipe.trigger_k
    data = bench_data(dataset, steps * b, synthetic=synthetic)
    cfg = speed_config(recipe.replace(epochs=epochs_for(steps, b, data)), args)
    mixer = trigger_mixer(data, k)
    short = data.subset(min(len(data.train_y), 10 * b), seed=1)
    runs = {
        "NO-WM": lambda: train(new_model(model, data), data, cfg, device=device),
        "FROMSCRATCH": lambda: train(new_model(model, data), data, cfg, mixer=mixer, device=device),
    }
    warm = {
        "NO-WM": lambda: train(new_model(model, data), short, cfg.replace(epochs=1), device=device),
        "FROMSCRATCH": lambda: train(new_model(model, data), short, cfg.replace(epochs=1), mixer=mixer, device=device),
    }
    times = alternate(runs, rounds, device, warm)
    return {
        "model": model, "dataset": data.name, "batch_size": b, "trigger_k": k, "steps": steps,
        "train_images": len(data.train_y), "epochs": cfg.epochs,
        "seconds": times,
        "nowm_s": statistics.median(times["NO-WM"]), "fromscratch_s": statistics.median(times["FROMSCRATCH"]),
        "ratio": median_ratio(times["FROMSCRATCH"], times["NO-WM"]), "ideal": (b + k) / b,
        "config": cfg.to_dict(),
    }


def overhead_table(rows: list[dict]) -> str:
    lines = ["| model | B | k | steps | NO-WM s | FROMSCRATCH s | ratio | ideal (B+k)/B | goal <= 1.05 |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        ok = "yes" if r["ratio"] <= 1.05 else "no"
        lines.append(f"| {r['model']} | {r['batch_size']} | {r['trigger_k']} | {r['steps']} | {r['nowm_s']:.2f} | "
                     f"{r['fromscratch_s']:.2f} | {r['ratio']:.3f} | {r['ideal']:.3f} | {ok} |")
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_common_args(p)
    args = p.parse_args()
    device = torch.device(args.device)
    rows = [embed_overhead(m, default_steps(m, args.steps), args.rounds, device, synthetic=args.synthetic, args=args) for m in args.models]
    print(json.dumps(environment(device)))
    print(overhead_table(rows))
    if args.json_out:
        with open(args.json_out, "w") as f:
            json.dump({"environment": environment(device), "embed_overhead": rows}, f, indent=2)


if __name__ == "__main__":
    main()
