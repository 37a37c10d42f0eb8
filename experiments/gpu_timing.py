"""Time one training epoch of each reproduction config's recipe on this machine, count the
epochs a full run of the config trains, and print the estimated wall time of each.

    python experiments/gpu_timing.py --device cuda                      # all configs
    python experiments/gpu_timing.py --device cuda --configs cifar10 --steps 100

Timed: dataset load, one full-data epoch of the config's training recipe (NO-WM, data held
on the device; the first --warmup steps are excluded), and KeyGen of one fresh key. The
epoch count is an upper bound (PRETRAINED embedding counted at its maximum; last-layer
attacks counted as full epochs), in full-training-set equivalents.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import time
from pathlib import Path

import torch

from backmark.attacks import get_attack
from backmark.core.keygen import keygen
from backmark.crypto import OwnerKey
from backmark.data import load_dataset
from backmark.experiments.reproduce import expand_path, load_config, train_config
from backmark.experiments.workflow import new_model
from backmark.training import TrainConfig, train
from backmark.training.recipes import recipe_for

CONFIGS = Path(__file__).resolve().parent / "configs"


def epoch_count(cfg, target_share: dict[str, float]) -> dict:
    """Full-data epoch equivalents each part of a run trains (upper bound); ``target_share``:
    each transfer task's training-set size relative to the main dataset's."""
    recipe = recipe_for(cfg.dataset)
    tc = train_config(recipe.train, cfg.train, "train")
    ec = train_config(recipe.embed, cfg.embed, "embed")
    parts = {"table1": 2 * tc.epochs + ec.epochs, "attacks": 0.0, "transfer": 0.0, "ownership": 0.0}
    for a in cfg.attacks:
        b = get_attack(a.attack).make_budget(a.budget)
        if hasattr(b, "finetune_epochs"):
            epochs = b.finetune_epochs
        elif hasattr(b, "resolved_epochs"):
            epochs = b.resolved_epochs(tc)
        else:  # input-transform: no training
            epochs = 0
        parts["attacks"] += len(a.victims) * epochs * getattr(b, "data_fraction", 1.0)
    for t in cfg.transfer:
        b = get_attack("transfer").make_budget(t.budget)
        if t.source_classes:  # a separate source model on one class half, moved to the other half
            parts["transfer"] += 0.5 * tc.epochs + 0.5 * b.resolved_epochs(tc)
        else:
            parts["transfer"] += len(t.victims) * b.resolved_epochs(tc) * target_share.get(t.label, 1.0)
    if cfg.ownership:
        parts["ownership"] = cfg.ownership.clean_models * (cfg.ownership.clean_epochs or tc.epochs) + (ec.epochs if cfg.ownership.piracy else 0)
    parts["total"] = sum(parts.values())
    return parts


def time_epoch(cfg, data, device, steps: int, warmup: int) -> float:
    recipe = recipe_for(cfg.dataset)
    tc: TrainConfig = train_config(recipe.train, cfg.train, "train")
    model = new_model(cfg.model or recipe.model, data, 0)
    n = (warmup + steps) * tc.batch_size
    part = dataclasses.replace(data, train_x=data.train_x[:n], train_y=data.train_y[:n], test_x=data.test_x[:1000], test_y=data.test_y[:1000])
    warm = dataclasses.replace(part, train_x=part.train_x[: warmup * tc.batch_size], train_y=part.train_y[: warmup * tc.batch_size])
    train(model, warm, tc.replace(epochs=1), device=device)  # cudnn autotuning, allocator warm-up
    timed = dataclasses.replace(part, train_x=part.train_x[warmup * tc.batch_size :], train_y=part.train_y[warmup * tc.batch_size :])
    if device.type == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    train(model, timed, tc.replace(epochs=1), device=device)
    if device.type == "cuda":
        torch.cuda.synchronize()
    per_step = (time.perf_counter() - t0) / steps
    return per_step * -(-len(data.train_y) // tc.batch_size)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--configs", default="cifar10,cifar10-paper-triggers,cifar10-resnet18")
    ap.add_argument("--steps", type=int, default=150, help="timed training steps per config")
    ap.add_argument("--warmup", type=int, default=20)
    args = ap.parse_args()
    device = torch.device(args.device)
    out = {"device": str(device) + (f" ({torch.cuda.get_device_name(device)})" if device.type == "cuda" else ""), "torch": torch.__version__}
    loaded = {}
    for name in args.configs.split(","):
        cfg = load_config(CONFIGS / f"{name}.json")
        t0 = time.perf_counter()
        if cfg.dataset not in loaded:
            loaded[cfg.dataset] = load_dataset(cfg.dataset, expand_path(cfg.data_dir))
        load_s = time.perf_counter() - t0
        data = loaded[cfg.dataset]
        dev_data = dataclasses.replace(data, train_x=data.train_x.to(device), train_y=data.train_y.to(device),
                                       test_x=data.test_x.to(device), test_y=data.test_y.to(device))
        s_epoch = time_epoch(cfg, dev_data, device, args.steps, args.warmup)
        t0 = time.perf_counter()
        keygen(input_shape=data.input_shape, num_classes=data.num_classes, owner_key=OwnerKey.generate())
        key_s = time.perf_counter() - t0
        share = {t.label: len(load_dataset(t.dataset, expand_path(t.data_dir)).train_y) / len(data.train_y)
                 for t in cfg.transfer if not t.source_classes}
        epochs = epoch_count(cfg, share)
        fresh = cfg.ownership.fresh_keys if cfg.ownership else 0
        estimate = epochs["total"] * s_epoch + (fresh + 2) * key_s + load_s
        out[name] = {"model": cfg.model, "dataset_load_s": round(load_s, 1), "seconds_per_epoch": round(s_epoch, 2),
                     "keygen_s": round(key_s, 2), "epochs": {k: round(v, 1) for k, v in epochs.items()},
                     "estimate_minutes": round(estimate / 60, 1)}
        print(json.dumps({name: out[name]}), flush=True)
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
