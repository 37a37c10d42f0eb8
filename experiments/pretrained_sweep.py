"""PRETRAINED at the least cost: the compute to embed a key into a TRAINED model until every trigger
is learnt, against the test accuracy it costs, over a grid of recipes (k, lr, trained layers, hold).

    flock /tmp/backmark-heavy2.lock python experiments/pretrained_sweep.py --dataset fashion-mnist --work runs/sweep-fmnist \
        --cap 0.6 --threads 1 --confirm 2 --json docs/results/pretrained-sweep-fmnist.json \
        --md docs/results/pretrained-sweep-fmnist.md
    flock /tmp/backmark-heavy2.lock python experiments/pretrained_sweep.py --dataset cifar10-jpg --model cifar-fast \
        --train-size 20000 --work runs/sweep-cifar --cap 1.0 --epoch-steps 5 --seeds 2 --confirm 1 --threads 1 \
        --json docs/results/pretrained-sweep-cifar10.json --md docs/results/pretrained-sweep-cifar10.md

(docs/results/pretrained-sweep.md: the results and how to read them.)

1. The ORIGINAL training: the dataset's recipe (``recipe_for(dataset).train``), NO-WM, cached in
   ``--work``. Its compute is epochs x training images; "one epoch" below is one pass over them.
2. One key of 100 abstract triggers (derived labels), cached in ``--work``.
3. Each recipe embeds the key with ``mark_pretrained`` (the code ``backmark embed`` runs) in short
   epochs of ``--epoch-steps`` steps, each followed by the trigger check that the stopping rule needs;
   it runs until the watermark has held ``max(--holds) + 1`` checks (or the ``--cap`` epochs of compute
   are spent). The model is snapshotted at each check the trigger accuracy is 100%; the snapshot where
   hold h would have stopped is scored on the FULL test set. Compute = optimizer steps x (B + k)
   images, forward and backward; the trigger checks (100 images, forward only) are counted apart.
4. The cheapest recipes that meet the cost limit are rerun with ``--seeds`` more seeds (data order and
   trigger cycle), and their median decides the winner.

The loop's own per-epoch test score uses ``--check-test`` test images (monitoring only: the numbers
reported are the full test set's, scored on the snapshots).
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import itertools
import json
import platform
import time
from pathlib import Path

import torch
from sweep_report import RunCache, command_line, cost_points, final, hold_stop, report, summarise, table
from torch import nn

from backmark.core.keygen import MarkingKey, VerificationKey, keygen, open_elements
from backmark.core.mark import mark_pretrained
from backmark.crypto import OwnerKey
from backmark.data import load_dataset
from backmark.experiments.workflow import data_meta, new_model
from backmark.models.checkpoint import load_model, save_model
from backmark.training import accuracy, train
from backmark.training.layers import trainable_parameters
from backmark.training.memory import keep_freed_memory
from backmark.training.recipes import recipe_for

# (k, lr, layers, bn, cool) per dataset; layers: "all" or "last:N" (the last N weight layers and the norms after them);
# bn: TrainConfig.bn_stats, "batch" (BatchNorm on batch statistics, as in training) or "frozen" (on the running ones);
# cool: TrainConfig.cooldown_steps once the watermark holds (0: stop there)
GRIDS = {
    "fashion-mnist": [
        {"k": [32, 64, 128], "lr": [0.01, 0.03, 0.1], "layers": ["all", "last:2"], "bn": ["batch"]},
        {"k": [32, 64, 128], "lr": [0.01, 0.03, 0.1], "layers": ["all"], "bn": ["frozen"]},
        {"k": [64, 128], "lr": [0.01, 0.03], "layers": ["all", "last:2"], "bn": ["batch"], "cool": [30, 60]},
        {"k": [32], "lr": [0.01], "layers": ["last:2"], "bn": ["batch"], "cool": [30]},
        {"k": [24, 32, 48], "lr": [0.007, 0.01, 0.014], "layers": ["last:2"], "bn": ["batch"]},  # around the best so far
        {"k": [32], "lr": [0.01], "layers": ["last:1", "last:3"], "bn": ["batch"]},
        {"k": [32, 64, 128], "lr": [0.01, 0.03], "layers": ["last:2"], "bn": ["frozen"]},  # the features exactly the original's
        {"k": [16, 24], "lr": [0.01, 0.012], "layers": ["last:2"], "bn": ["batch"]},  # fewer trigger images a step
    ],
    # small (a CPU budget of ~15 minutes): Fashion-MNIST's best as it is; k and lr scaled to B = 256, the last two or all layers
    "cifar10-jpg": [
        {"k": [24], "lr": [0.01], "layers": ["last:2"], "bn": ["batch"]},
        {"k": [48], "lr": [0.02], "layers": ["last:2", "all"], "bn": ["batch"]},
    ],
}
BASELINE = {
    "fashion-mnist": {"k": 2, "lr": 0.01, "layers": "all"},
    "cifar10-jpg": {"k": 4, "lr": 0.01, "layers": "all"},
}  # the old default


class Snapshots:
    """A reporter that keeps the model's weights after every epoch whose trigger accuracy is 100%."""

    def __init__(self, model: nn.Module):
        self.model, self.kept, self.epochs, self.steps = model, [], [], 0

    def start_epoch(self, epoch, epochs, steps):
        pass

    def step(self, loss):
        self.steps += 1

    def end_epoch(self, stats):
        self.epochs.append(stats)
        if stats.trigger_acc is not None and stats.trigger_acc >= 1.0:
            self.kept.append((stats.epoch, copy.deepcopy(self.model.state_dict())))


def original_model(args, data) -> tuple[nn.Module, dict]:
    path = Path(args.work) / "original.safetensors"
    if path.exists():
        model, meta = load_model(path)
        return model, meta["sweep"]
    cfg = recipe_for(args.dataset).train
    model = new_model(args.model, data, cfg.seed)
    t0 = time.perf_counter()
    history = train(model, data, cfg, device="cpu")
    info = {
        "config": cfg.to_dict(),
        "epochs": cfg.epochs,
        "train_images": len(data.train_y),
        "steps": cfg.epochs * -(-len(data.train_y) // cfg.batch_size),
        "images": cfg.epochs * len(data.train_y),
        "seconds": time.perf_counter() - t0,
        "monitor_test_acc": history[-1].test_acc,
    }
    save_model(path, model, {**data_meta(data), "model": args.model, "config": cfg.to_dict(), "sweep": info})
    return model.eval(), info


def the_key(args, data) -> tuple[MarkingKey, list[int]]:
    mk_path, vk_path = Path(args.work) / "marking-key.json", Path(args.work) / "verification-key.json"
    if not mk_path.exists():
        mk, vk = keygen(input_shape=data.input_shape, num_classes=data.num_classes, owner_key=OwnerKey.generate(), set_size=100)
        mk.save(mk_path)
        vk.save(vk_path)
    mk, vk = MarkingKey.load(mk_path), VerificationKey.load(vk_path)
    return mk, open_elements(mk, vk)


def recipe_of(k: int, lr: float, layers: str, bn: str = "batch", cool: int = 0) -> dict:
    r = {"k": k, "lr": lr, "layers": layers}
    if bn != "batch":  # (defaults left out, so the keys of runs made before these options still match)
        r["bn"] = bn
    if cool:
        r["cool"] = cool
    return r


def embed_run(base: nn.Module, data, full_test, mk, recipe: dict, seed: int, args, original: dict) -> dict:
    # the original's batch size, augmentation and optimizer (not embed's defaults, which this sweep sets)
    base_cfg = recipe_for(args.dataset).train
    b = base_cfg.batch_size
    cap_steps = int(args.cap * original["train_images"] / b)
    epochs = max(1, cap_steps // args.epoch_steps)
    cfg = base_cfg.replace(trigger_k=recipe["k"], lr=recipe["lr"], epoch_steps=args.epoch_steps, epochs=epochs, seed=seed)
    cool = recipe.get("cool", 0)
    cfg = dataclasses.replace(cfg, schedule="constant", bn_stats=recipe.get("bn", "batch"), cooldown_steps=cool)
    model = copy.deepcopy(base)
    snaps = Snapshots(model)
    params = trainable_parameters(model, recipe["layers"])
    t0 = time.perf_counter()
    # with a cool-down the rule stops at the first check at 100%, then cools down; without, it runs to the longest hold
    mark_pretrained(model, data, mk, cfg, hold=0 if cool else max(args.holds), params=params, device="cpu", reporter=snaps)
    seconds = time.perf_counter() - t0
    per_step = b + recipe["k"]
    out = {
        **recipe,
        "seed": seed,
        "batch_size": b,
        "epoch_steps": args.epoch_steps,
        "cap_epochs": epochs,
        "seconds": seconds,
        "checks": len(snaps.epochs),
        "trigger_acc_per_check": [s.trigger_acc for s in snaps.epochs],
        "holds": {},
    }
    kept = dict(snaps.kept)
    for h in args.holds:
        stop = hold_stop(snaps.epochs, h)
        if stop is None:
            out["holds"][str(h)] = None
            continue
        probe = copy.deepcopy(base)
        probe.load_state_dict(kept[stop])
        steps = stop * args.epoch_steps
        out["holds"][str(h)] = {
            "checks": stop,
            "steps": steps,
            "images": steps * per_step,
            "epochs_of_original": steps * per_step / original["train_images"],
            "fraction_of_training": steps * per_step / original["images"],
            "test_acc": accuracy(probe, full_test[0], full_test[1]),
            "trigger_images_checked": stop * len(mk.labels),
        }
    if cool and out["holds"]["0"] is not None:  # the model after its cool-down
        out["cooled"] = {
            "checks": len(snaps.epochs),
            "steps": snaps.steps,
            "images": snaps.steps * per_step,
            "epochs_of_original": snaps.steps * per_step / original["train_images"],
            "fraction_of_training": snaps.steps * per_step / original["images"],
            "test_acc": accuracy(model, full_test[0], full_test[1]),
            "trigger_acc": snaps.epochs[-1].trigger_acc,
            "trigger_images_checked": len(snaps.epochs) * len(mk.labels),
        }
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--dataset", choices=sorted(GRIDS), required=True)
    ap.add_argument("--model", default=None, help="[the recipe's model]")
    ap.add_argument("--train-size", type=int, default=None)
    ap.add_argument("--work", required=True, help="Folder for the original model and the key (reused when rerun).")
    ap.add_argument("--epoch-steps", type=int, default=10, help="Steps between two trigger checks.")
    ap.add_argument("--holds", type=int, nargs="+", default=[0, 1, 3], help="Checks at 100%% to hold before stopping.")
    ap.add_argument("--cap", type=float, default=1.0, help="Most compute per run, in epochs of the original training.")
    ap.add_argument(
        "--check-test", type=int, default=500, help="Test images the loop scores after each short epoch (monitoring)."
    )
    ap.add_argument("--max-cost", type=float, default=0.3, help="Test accuracy cost allowed (points).")
    ap.add_argument("--seeds", type=int, default=3, help="Seeds for the confirmation of the cheapest recipes.")
    ap.add_argument("--confirm", type=int, default=4, help="How many of the cheapest recipes to confirm.")
    ap.add_argument(
        "--grid",
        default=None,
        help='JSON grid replacing the built-in one, e.g. \'[{"k": [32], "lr": [0.01], "layers": ["all"], "bn": ["batch"]}]\'.',
    )
    ap.add_argument("--json", dest="json_out", required=True)
    ap.add_argument("--md", default=None, help="Also write the markdown report here.")
    ap.add_argument("--threads", type=int, default=None, help="torch threads [default] (1 is faster on a busy machine).")
    ap.add_argument("--render", action="store_true", help="Only render --json (an earlier run's) to --md.")
    ap.add_argument(
        "--cached-only", action="store_true", help="Report the runs already in --work; run none (the others: listed as not run)."
    )
    args = ap.parse_args()
    if args.render:
        Path(args.md).write_text(report(json.loads(Path(args.json_out).read_text())))
        return
    if args.threads:
        torch.set_num_threads(args.threads)
    keep_freed_memory()  # as the backmark command does (the figures are counts of images, not seconds)
    explicit_model = args.model is not None
    args.model = args.model or recipe_for(args.dataset).model
    Path(args.work).mkdir(parents=True, exist_ok=True)
    full = load_dataset(args.dataset)
    data = full.subset(args.train_size, seed=0) if args.train_size else full
    base, original = original_model(args, data)
    mk, _ = the_key(args, data)
    full_test = (data.test_x, data.test_y)
    base_acc = accuracy(base, *full_test)
    monitor = data.subset(None, seed=1, test_size=args.check_test)
    grid = json.loads(args.grid) if args.grid else GRIDS[args.dataset]
    started = time.perf_counter()
    runs = []
    recipes = [
        recipe_of(k, lr, layers, bn, cool)
        for g in grid
        for k, lr, layers, bn, cool in itertools.product(g["k"], g["lr"], g["layers"], g["bn"], g.get("cool", [0]))
    ]
    if not args.grid:
        recipes.insert(0, BASELINE[args.dataset])
    recipes = list({json.dumps(r, sort_keys=True): r for r in recipes}.values())  # a recipe in two grid lines runs once
    cache = RunCache(Path(args.work), args)

    not_run = []

    def run(recipe, seed):
        if args.cached_only and not cache.has(recipe, seed):
            not_run.append({**recipe, "seed": seed})
            return None
        return cache.run(recipe, seed, lambda: embed_run(base, monitor, full_test, mk, recipe, seed, args, original))

    for recipe in recipes:
        r = run(recipe, 0)
        if r is not None:
            runs.append(r)
            print(table(runs[-1:], base_acc, args.holds), flush=True)
    ok = [r for r in runs if final(r) is not None and cost_points(r, "final", base_acc) <= args.max_cost]
    ok.sort(key=lambda r: final(r)["images"])
    confirm = []
    for r in ok[: args.confirm]:
        recipe = recipe_of(r["k"], r["lr"], r["layers"], r.get("bn", "batch"), r.get("cool", 0))
        seeds = [r] + [x for x in (run(recipe, s) for s in range(1, args.seeds)) if x is not None]
        confirm.append({"recipe": recipe, "runs": seeds, "summary": summarise(seeds, args.holds, base_acc)})
        print(table(seeds, base_acc, args.holds), flush=True)
    doc = {
        "command": command_line(args, explicit_model),
        "environment": {"torch": torch.__version__, "python": platform.python_version(), "threads": torch.get_num_threads()},
        "dataset": data.name,
        "model": args.model,
        "train_images": len(data.train_y),
        "test_images": len(data.test_y),
        "original": original,
        "original_test_acc": base_acc,
        "grid": grid,
        "epoch_steps": args.epoch_steps,
        "holds": args.holds,
        "max_cost": args.max_cost,
        "runs": runs,
        "confirmed": confirm,
        "not_run": not_run,  # --cached-only: recipes and seeds of the grid no run was made for
        "sweep_seconds": time.perf_counter() - started,
    }
    Path(args.json_out).write_text(json.dumps(doc, indent=1))
    if args.md:
        Path(args.md).write_text(report(doc))
    print(report(doc))


if __name__ == "__main__":
    main()
