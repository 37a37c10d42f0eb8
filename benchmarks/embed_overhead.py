"""Embedding overhead: FROMSCRATCH (k trigger images appended to every batch) over NO-WM, same recipe.

Both arms are backmark's own ``train()`` on the dataset's recipe (batch B, k triggers), each with
its own model and data, called again and again for one short epoch of ``--steps`` steps
(``TrainConfig.epoch_steps``); the arms take turns in a random order each round (paired,
interleaved: :mod:`_harness`). What is timed is the training steps themselves, from the end of the
first step to the end of the last, read by a progress reporter inside the loop: drawing the batch,
appending the triggers, forward, backward, optimizer step. Setting up a call and scoring the test
and trigger sets after it (the trigger check is FROMSCRATCH's alone: 100 forward images an epoch)
are timed apart, as "whole call". The ideal ratio is (B + k) / B, the extra images. The claim:
the ratio, to within +-1%, is at most 1.03.

    flock /tmp/backmark-heavy.lock python benchmarks/embed_overhead.py --json out.json
    python benchmarks/embed_overhead.py --device cuda --synthetic --steps 100 --json out.json   # on a GPU

The data, key and model helpers here are shared with ``train_throughput.py``.
"""

from __future__ import annotations

import argparse
import json
import time

import torch
from _harness import (
    Timing,
    compare,
    environment,
    interleave,
    interval_text,
    ratio_interval,
    rounds_of,
    use_malloc,
    verdict_both,
    wall,
)

from backmark.core.keygen import keygen
from backmark.core.mark import TriggerMixer
from backmark.crypto import OwnerKey
from backmark.data import Dataset, load_dataset
from backmark.models import create_model
from backmark.training import TrainConfig, train
from backmark.training.recipes import recipe_for

# model -> the dataset (recipe) it is benchmarked on
DATASET_OF = {
    "fmnist-cnn": "fashion-mnist",
    "cifar-fast": "cifar10-jpg",
    "cifar-small": "cifar10-jpg",
    "resnet18-cifar": "cifar10-jpg",
}
SHAPES = {"fashion-mnist": (1, 28, 28), "cifar10-jpg": (3, 32, 32)}
TEST_SIZE = 200  # test images scored after each call (outside the timed steps)
STEPS = {"fmnist-cnn": 12, "cifar-fast": 4, "cifar-small": 3, "resnet18-cifar": 2}  # steps per timed unit on this CPU
TARGET, RESOLUTION = 1.03, 0.01


def bench_data(dataset: str, n_train: int, *, synthetic: bool, seed: int = 0) -> Dataset:
    """``n_train`` training images of ``dataset`` (the real files, or random pixels of its shape:
    speed does not depend on pixel values, so ``synthetic`` serves where the files are absent)."""
    if synthetic:
        g = torch.Generator().manual_seed(seed)
        shape = SHAPES[dataset]
        x = torch.randint(0, 256, (n_train + TEST_SIZE, *shape), dtype=torch.uint8, generator=g)
        y = torch.randint(0, 10, (n_train + TEST_SIZE,), generator=g)
        c = shape[0]
        return Dataset(
            f"{dataset} (synthetic)",
            x[:n_train],
            y[:n_train],
            x[n_train:],
            y[n_train:],
            tuple(str(i) for i in range(10)),
            (0.5,) * c,
            (0.25,) * c,
        )
    full = load_dataset(dataset, test_size=TEST_SIZE, seed=seed)
    return full.subset(min(n_train, len(full.train_y)), seed=seed, test_size=None)


def trigger_mixer(data: Dataset, k: int, *, n: int = 100, seed: int = 0) -> TriggerMixer:
    """A mixer over a fresh key's n abstract trigger images (derived labels), as FROMSCRATCH uses."""
    mk, _ = keygen(input_shape=data.input_shape, num_classes=data.num_classes, owner_key=OwnerKey.generate(), set_size=n)
    return TriggerMixer.from_key(mk, k=k, seed=seed)


def new_model(name: str, data: Dataset, seed: int = 0) -> torch.nn.Module:
    return create_model(name, num_classes=data.num_classes, input_shape=data.input_shape, mean=data.mean, std=data.std, seed=seed)


def speed_config(cfg: TrainConfig, args) -> TrainConfig:
    return cfg.replace(precision=args.precision, compile=args.compile, channels_last=not args.no_channels_last)


class StepClock:
    """A progress reporter that times the steps of one epoch: from the end of step 1 to the end of the last."""

    def __init__(self, device: torch.device):
        self.device, self.marks = device, []

    def start_epoch(self, epoch, epochs, steps):
        self.marks = []

    def step(self, loss):
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        self.marks.append((time.perf_counter(), time.process_time()))

    def end_epoch(self, stats):
        pass

    def timing(self) -> Timing:
        (w0, c0), (w1, c1) = self.marks[0], self.marks[-1]
        return Timing(w1 - w0, c1 - c0)


def steps_arm(model, data, cfg, mixer, device, calls: list[Timing]):
    """One timed unit: a short epoch of train() on a model that keeps training from call to call."""
    clock = StepClock(device)

    def run() -> Timing:
        w, c = time.perf_counter(), time.process_time()
        train(model, data, cfg, mixer=mixer, device=device, reporter=clock)
        calls.append(Timing(time.perf_counter() - w, time.process_time() - c))
        return clock.timing()

    return run


def embed_overhead(model_name: str, steps: int, device: torch.device, args) -> dict:
    dataset = DATASET_OF[model_name]
    recipe = speed_config(recipe_for(dataset).train, args)
    b, k = recipe.batch_size, recipe.trigger_k
    data = bench_data(dataset, 4 * steps * b, synthetic=args.synthetic)
    cfg = recipe.replace(epochs=1, epoch_steps=steps, schedule="constant", lr=recipe.lr / 10)  # constant lr: every call alike
    mixer = trigger_mixer(data, k)
    calls = {"NO-WM": [], "FROMSCRATCH": []}
    arms = {
        "NO-WM": steps_arm(new_model(model_name, data), data, cfg, None, device, calls["NO-WM"]),
        "FROMSCRATCH": steps_arm(new_model(model_name, data), data, cfg, mixer, device, calls["FROMSCRATCH"]),
    }
    started = time.perf_counter()
    times = interleave(
        arms,
        baseline="NO-WM",
        resolution=RESOLUTION,
        **rounds_of(args),
        device=device,
        seed=1,
    )
    steps_cmp = compare(times, "FROMSCRATCH", "NO-WM")
    n = len(times["NO-WM"])
    whole = {a: c[-n:] for a, c in calls.items()}  # the calls of the kept (post-warm-up) rounds
    return {
        "model": model_name,
        "dataset": data.name,
        "batch_size": b,
        "trigger_k": k,
        "steps_per_unit": steps,
        "rounds": n,
        "ideal": (b + k) / b,
        "target": TARGET,
        "resolution": RESOLUTION,
        "seconds": time.perf_counter() - started,
        "steps": steps_cmp,
        "whole_call_wall": ratio_interval(wall(whole["FROMSCRATCH"]), wall(whole["NO-WM"])).as_dict(),
        "verdict": verdict_both(times, "FROMSCRATCH", "NO-WM", target=TARGET, resolution=RESOLUTION),
        "samples": {a: [[t.wall, t.cpu] for t in ts] for a, ts in times.items()},
        "config": cfg.to_dict(),
    }


def markdown(rows: list[dict]) -> str:
    lines = [
        "| model | B | k | steps x rounds | NO-WM ms/step | FROMSCRATCH / NO-WM, wall [95%] | CPU [95%] | ideal (B+k)/B | "
        "whole call, wall [95%] | verdict (<= 1.03 to +-1%) |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        s = r["steps"]
        per_step = 1000 * s["median_wall_s"]["NO-WM"] / max(1, r["steps_per_unit"] - 1)
        lines.append(
            f"| {r['model']} | {r['batch_size']} | {r['trigger_k']} | {r['steps_per_unit']} x {r['rounds']} | {per_step:.1f} | "
            f"{interval_text(s['wall'])} | {interval_text(s['cpu'])} | {r['ideal']:.3f} | "
            f"{interval_text(r['whole_call_wall'])} | "
            f"{r['verdict']} |"
        )
    return "\n".join(lines)


def add_common_args(p: argparse.ArgumentParser, models: list[str]) -> None:
    p.add_argument("--models", nargs="+", default=models, choices=sorted(DATASET_OF))
    p.add_argument("--steps", type=int, default=None, help="Training steps per timed unit [per model, see STEPS].")
    p.add_argument(
        "--min-rounds", "--rounds", dest="min_rounds", type=int, default=8, help="Rounds before stopping is considered."
    )
    p.add_argument("--max-rounds", type=int, default=200)
    p.add_argument("--budget", type=float, default=120.0, help="Seconds per model after which no new round starts.")
    p.add_argument("--device", default="cpu")
    p.add_argument("--synthetic", action="store_true", help="Random pixels of the dataset's shape instead of its files.")
    p.add_argument("--precision", choices=["fp32", "bf16"], default="fp32")
    p.add_argument("--compile", choices=["auto", "on", "off"], default="off")
    p.add_argument("--no-channels-last", action="store_true")
    p.add_argument("--json", dest="json_out", default=None, help="Also write the results here.")
    p.add_argument("--system-malloc", action="store_true", help="The C library's malloc as it is, not the backmark command's setting.")


def run(args) -> dict:
    use_malloc(getattr(args, "system_malloc", False))
    device = torch.device(args.device)
    rows = [embed_overhead(m, args.steps or STEPS[m], device, args) for m in args.models]
    return {"environment": environment(device), "embed_overhead": rows}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_common_args(p, ["fmnist-cnn", "cifar-fast"])
    args = p.parse_args()
    result = run(args)
    print(json.dumps(result["environment"]))
    print(markdown(result["embed_overhead"]))
    if args.json_out:
        with open(args.json_out, "w") as f:
            json.dump(result, f, indent=1)


if __name__ == "__main__":
    main()
