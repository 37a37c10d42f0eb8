"""Training throughput: backmark's pipeline vs the official code's style, and vs the limit.

Three ways to train the same model on the same images, batch 100 + k = 2 trigger images:

- ``backmark``: ``backmark.training.train`` with a key's TriggerMixer (uint8 tensors in memory,
  batched augmentation, triggers appended by slicing), timed as a whole call (steps, then
  the end-of-epoch evaluation on 200 test images and the 100 triggers);
- ``official-wN``: the style of the official code (github adiyoss/WatermarkNN, trainer.py
  and helpers/loaders.py), written here without torchvision: a ``DataLoader`` with N workers
  over a per-sample ``Dataset`` that makes a PIL image of each sample and runs PIL
  transforms on it (RandomCrop(32, padding=4) + RandomHorizontalFlip for CIFAR, then
  ToTensor and Normalize); the trigger images preloaded on the device in batches of 2 and
  appended with ``torch.cat``; ``loss.item()`` and the batch accuracy read every step;
- ``limit``: the model's forward + backward + optimizer step alone, on float batches of
  100 + 2 images already on the device, in backmark's memory format and precision.

Runs alternate in one process; throughput is images (clean + trigger) per second, ratios
are medians over rounds. Goals: backmark / official >= 2, backmark / limit >= 0.9. Then
the embedding overhead (FROMSCRATCH vs NO-WM, from ``embed_overhead.py``).

    flock /tmp/backmark-heavy.lock .venv/bin/python benchmarks/train_throughput.py --workers 0 2
    python benchmarks/train_throughput.py --device cuda --synthetic --steps 400 --workers 4 8   # on a GPU
"""
from __future__ import annotations

import argparse
import json
import statistics
from contextlib import nullcontext

import numpy as np
import torch
import torch.nn.functional as F
from embed_overhead import (
    DATASET_OF,
    add_common_args,
    alternate,
    bench_data,
    default_steps,
    embed_overhead,
    environment,
    epochs_for,
    median_ratio,
    new_model,
    overhead_table,
    speed_config,
    sync,
    trigger_mixer,
)
from PIL import Image

from backmark.training import TrainConfig, make_optimizer, train, use_compile
from backmark.training.recipes import recipe_for

BATCH, K = 100, 2  # the official code's batch and triggers per batch


# -- the official code's style of pipeline -------------------------------------------

class PerSampleImages(torch.utils.data.Dataset):
    """Like torchvision's CIFAR10: uint8 arrays in memory, a PIL image made per sample, then transforms."""

    def __init__(self, images: np.ndarray, labels: np.ndarray, transform):
        self.images, self.labels, self.transform = images, labels, transform  # images (N, H, W, C) or (N, H, W)

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, i):
        return self.transform(Image.fromarray(self.images[i])), int(self.labels[i])


class RandomCropFlip:
    """RandomCrop(size, padding=4) then RandomHorizontalFlip(0.5), on a PIL image (torch's RNG, as torchvision)."""

    def __init__(self, pad: int = 4):
        self.pad = pad

    def __call__(self, img: Image.Image) -> Image.Image:
        w, h = img.size
        padded = Image.new(img.mode, (w + 2 * self.pad, h + 2 * self.pad))
        padded.paste(img, (self.pad, self.pad))
        i, j = (int(v) for v in torch.randint(0, 2 * self.pad + 1, (2,)))
        img = padded.crop((j, i, j + w, i + h))
        return img.transpose(Image.Transpose.FLIP_LEFT_RIGHT) if torch.rand(1).item() < 0.5 else img


class ToTensorNormalize:
    """ToTensor (HWC uint8 -> CHW float in [0, 1]) then Normalize(mean, std)."""

    def __init__(self, mean, std):
        self.mean = torch.tensor(mean).view(-1, 1, 1)
        self.std = torch.tensor(std).view(-1, 1, 1)

    def __call__(self, img: Image.Image) -> torch.Tensor:
        a = torch.from_numpy(np.asarray(img, dtype=np.uint8).copy())
        a = a[:, :, None] if a.ndim == 2 else a
        return (a.permute(2, 0, 1).float().div(255) - self.mean) / self.std


class Compose:
    def __init__(self, *steps):
        self.steps = steps

    def __call__(self, x):
        for step in self.steps:
            x = step(x)
        return x


def hwc(x: torch.Tensor) -> np.ndarray:
    """uint8 (N, C, H, W) -> the (N, H, W, C) array (or (N, H, W) for one channel) that PIL reads."""
    a = x.permute(0, 2, 3, 1).numpy()
    return a[..., 0] if a.shape[-1] == 1 else a


def official_epoch(model, data, mixer, steps: int, workers: int, augment: bool, device: torch.device) -> None:
    """One 'epoch' of ``steps`` batches in the official code's style."""
    to_tensor = ToTensorNormalize(data.mean, data.std)
    transform = Compose(RandomCropFlip(), to_tensor) if augment else to_tensor
    loader = torch.utils.data.DataLoader(PerSampleImages(hwc(data.train_x), data.train_y.numpy(), transform),
                                         batch_size=BATCH, shuffle=True, num_workers=workers)
    # trigger images: a per-sample dataset, loaded once per epoch into device-resident batches of K
    trig = (mixer.images * 255).round().to(torch.uint8).cpu()
    wm = torch.utils.data.DataLoader(PerSampleImages(hwc(trig), mixer.labels.cpu().numpy(), to_tensor), batch_size=K, shuffle=True)
    wm_inputs, wm_targets = zip(*[(x.to(device), y.to(device)) for x, y in wm])
    opt = make_optimizer(model.parameters(), TrainConfig(lr=0.05))
    model.train()
    correct = total = 0
    train_loss = 0.0
    for batch_idx, (inputs, targets) in enumerate(loader):
        if batch_idx == steps:
            break
        inputs, targets = inputs.to(device), targets.to(device)
        j = batch_idx % len(wm_inputs)
        inputs, targets = torch.cat([inputs, wm_inputs[j]]), torch.cat([targets, wm_targets[j]])
        opt.zero_grad()
        outputs = model(inputs)
        loss = F.cross_entropy(outputs, targets)
        loss.backward()
        opt.step()
        train_loss += loss.item()
        total += targets.size(0)
        correct += outputs.argmax(1).eq(targets).cpu().sum().item()


# -- the limit: forward + backward + step on batches already on the device ---------------

def limit_steps(model, data, steps: int, cfg: TrainConfig, device: torch.device) -> None:
    fmt = torch.channels_last if cfg.channels_last else torch.contiguous_format
    model.to(device=device, memory_format=fmt).train()
    g = torch.Generator().manual_seed(0)
    batches = []
    for _ in range(8):
        idx = torch.randint(0, len(data.train_y), (BATCH + K,), generator=g)
        x = data.train_x[idx].float().div(255).to(device).contiguous(memory_format=fmt)
        batches.append((x, data.train_y[idx].to(device)))
    net = torch.compile(model) if use_compile(cfg, device) else model
    autocast = torch.autocast(device.type, dtype=torch.bfloat16) if cfg.precision == "bf16" else nullcontext()
    opt = make_optimizer(model.parameters(), cfg)
    sync(device)
    for i in range(steps):
        x, y = batches[i % len(batches)]
        with autocast:
            loss = F.cross_entropy(net(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()


# -- the comparison ---------------------------------------------------------------------

def throughput(model_name: str, steps: int, rounds: int, workers: list[int], device: torch.device, args) -> dict:
    dataset = DATASET_OF[model_name]
    augment = dataset != "fashion-mnist"
    data = bench_data(dataset, steps * BATCH, synthetic=args.synthetic)
    mixer = trigger_mixer(data, K)
    cfg = speed_config(TrainConfig(epochs=epochs_for(steps, BATCH, data), batch_size=BATCH, trigger_k=K, lr=0.05, augment=augment), args)
    if cfg.epochs > 1:
        raise SystemExit(f"{model_name}: {steps} steps need more than the {len(data.train_y)} training images; use --synthetic or fewer steps")
    runs = {"backmark": lambda: train(new_model(model_name, data), data, cfg, mixer=mixer, device=device)}
    for w in workers:
        runs[f"official-w{w}"] = lambda w=w: official_epoch(new_model(model_name, data).to(device), data, mixer, steps, w, augment, device)
    runs["limit"] = lambda: limit_steps(new_model(model_name, data), data, steps, cfg, device)
    if device.type == "cuda":  # the fallback for data too big for the GPU: batches through pinned host memory
        runs["backmark-host"] = lambda: train(new_model(model_name, data), data, cfg.replace(data_on_device=False), mixer=mixer, device=device)
    small = data.subset(min(10 * BATCH, len(data.train_y)), seed=1)
    warm = {
        "backmark": lambda: train(new_model(model_name, data), small, cfg.replace(epochs=1), mixer=mixer, device=device),
        "official": lambda: official_epoch(new_model(model_name, data).to(device), small, mixer, 10, 0, augment, device),
        "limit": lambda: limit_steps(new_model(model_name, data), data, 10, cfg, device),
    }
    times = alternate(runs, rounds, device, warm)
    images = steps * (BATCH + K)
    return {
        "model": model_name, "dataset": data.name, "steps": steps, "batch": BATCH, "k": K, "augment": augment,
        "seconds": times,
        "images_per_s": {name: images / statistics.median(t) for name, t in times.items()},
        "backmark_speedup": {name: median_ratio(t, times["backmark"]) for name, t in times.items()},  # backmark's images/s / this one's
        "config": cfg.to_dict(),
    }


GOALS = {"official": 2.0, "limit": 0.9}  # backmark's speed over the pipeline's, at least


def throughput_table(rows: list[dict]) -> str:
    lines = ["| model | precision | pipeline | images/s | backmark / this | goal |", "|---|---|---|---|---|---|"]
    for r in rows:
        for name, ips in r["images_per_s"].items():
            ratio = r["backmark_speedup"][name]
            goal = next((g for prefix, g in GOALS.items() if name.startswith(prefix)), None)
            verdict = "" if goal is None else f">= {goal}: {'yes' if ratio >= goal else 'no'}"
            lines.append(f"| {r['model']} | {r['config']['precision']} | {name} | {ips:.0f} | {ratio:.2f} | {verdict} |")
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_common_args(p)
    p.add_argument("--workers", type=int, nargs="+", default=[0, 2], help="DataLoader workers for the official-style pipeline.")
    p.add_argument("--no-overhead", action="store_true", help="Skip the FROMSCRATCH vs NO-WM comparison.")
    args = p.parse_args()
    device = torch.device(args.device)
    env = environment(device)
    print(json.dumps(env), flush=True)
    rows = []
    for m in args.models:
        rows.append(throughput(m, default_steps(m, args.steps), args.rounds, args.workers, device, args))
        print(throughput_table(rows[-1:]), flush=True)
    overhead = []
    if not args.no_overhead:
        for m in args.models:
            steps = max(10, default_steps(m, args.steps) * BATCH // recipe_for(DATASET_OF[m]).train.batch_size)  # about as many images
            overhead.append(embed_overhead(m, steps, args.rounds, device, synthetic=args.synthetic, args=args))
            print(overhead_table(overhead[-1:]), flush=True)
    print("\n" + throughput_table(rows))
    if overhead:
        print("\n" + overhead_table(overhead))
    if args.json_out:
        with open(args.json_out, "w") as f:
            json.dump({"environment": env, "throughput": rows, "embed_overhead": overhead}, f, indent=2)


if __name__ == "__main__":
    main()
