"""Training throughput: backmark's pipeline against the official code's style, and against the limit.

Three ways to train the same model on the same images, batch 100 + k = 2 trigger images:

- ``backmark``: ``backmark.training.train`` with a key's TriggerMixer (uint8 tensors in memory,
  batched augmentation, triggers appended by slicing), timed as a whole call (the steps, then
  the end-of-epoch evaluation on 200 test images and the 100 triggers);
- ``official-wN``: the style of the official code (github adiyoss/WatermarkNN, trainer.py
  and helpers/loaders.py), written here without torchvision: a ``DataLoader`` with N workers
  over a per-sample ``Dataset`` that makes a PIL image of each sample and runs PIL
  transforms on it (RandomCrop(32, padding=4) + RandomHorizontalFlip for CIFAR, then
  ToTensor and Normalize); the trigger images preloaded on the device in batches of 2 and
  appended with ``torch.cat``; ``loss.item()`` and the batch accuracy read every step;
- ``limit``: the model's forward + backward + optimizer step alone, on float batches of
  100 + 2 images already on the device, in backmark's memory format and precision.

All arms run in one process, paired and interleaved (:mod:`_harness`: each round every arm once,
in a random order; warm-up discarded; rounds until each ratio is resolved to +-3% or the budget
is spent). Reported per arm: images/s (clean + trigger, median round) and backmark's speed over
its speed with a 95% interval, in wall and in CPU time. Goals: backmark / official >= 2,
backmark / limit >= 0.9. Then the embedding overhead (``embed_overhead.py``), unless --no-overhead.

    flock /tmp/backmark-heavy.lock python benchmarks/train_throughput.py --json out.json
    python benchmarks/train_throughput.py --device cuda --synthetic --steps 200 --workers 4 8 --json out.json   # on a GPU
"""

from __future__ import annotations

import argparse
import json
import statistics
from contextlib import nullcontext

import numpy as np
import torch
import torch.nn.functional as F
from _harness import cpu, environment, interleave, interval_text, ratio_interval, rounds_of, use_malloc, verdict_both, wall
from embed_overhead import DATASET_OF, add_common_args, bench_data, embed_overhead, new_model, speed_config, trigger_mixer
from embed_overhead import STEPS as OVERHEAD_STEPS
from embed_overhead import markdown as overhead_markdown
from PIL import Image

from backmark.training import TrainConfig, make_optimizer, train, use_compile

BATCH, K = 100, 2  # the official code's batch and triggers per batch
STEPS = {"fmnist-cnn": 15, "cifar-fast": 4, "cifar-small": 3, "resnet18-cifar": 2}  # steps per timed unit on this CPU
GOALS = {"official": 2.0, "limit": 0.9}  # backmark's speed over the pipeline's, at least
RESOLUTION = 0.03


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
    loader = torch.utils.data.DataLoader(
        PerSampleImages(hwc(data.train_x), data.train_y.numpy(), transform), batch_size=BATCH, shuffle=True, num_workers=workers
    )
    # trigger images: a per-sample dataset, loaded once per epoch into device-resident batches of K
    trig = (mixer.images * 255).round().to(torch.uint8).cpu()
    wm = torch.utils.data.DataLoader(
        PerSampleImages(hwc(trig), mixer.labels.cpu().numpy(), to_tensor), batch_size=K, shuffle=True
    )
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
    for i in range(steps):
        x, y = batches[i % len(batches)]
        with autocast:
            loss = F.cross_entropy(net(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()


# -- the comparison ---------------------------------------------------------------------


def throughput(model_name: str, steps: int, workers: list[int], device: torch.device, args) -> dict:
    dataset = DATASET_OF[model_name]
    augment = dataset != "fashion-mnist"
    data = bench_data(dataset, steps * BATCH, synthetic=args.synthetic)
    mixer = trigger_mixer(data, K)
    cfg = speed_config(TrainConfig(epochs=1, batch_size=BATCH, trigger_k=K, lr=0.05, augment=augment), args)
    arms = {"backmark": lambda: train(new_model(model_name, data), data, cfg, mixer=mixer, device=device)}
    for w in workers:
        arms[f"official-w{w}"] = lambda w=w: official_epoch(
            new_model(model_name, data).to(device), data, mixer, steps, w, augment, device
        )
    arms["limit"] = lambda: limit_steps(new_model(model_name, data), data, steps, cfg, device)
    if device.type == "cuda":  # the fallback for data too big for the GPU: batches through pinned host memory
        arms["backmark-host"] = lambda: train(
            new_model(model_name, data), data, cfg.replace(data_on_device=False), mixer=mixer, device=device
        )
    times = interleave(
        arms,
        baseline="backmark",
        resolution=RESOLUTION,
        **rounds_of(args),
        device=device,
        seed=2,
    )
    images = steps * (BATCH + K)
    rows = {}
    for name, ts in times.items():
        w_iv = ratio_interval(
            wall(ts), wall(times["backmark"])
        )  # this arm's time over backmark's = backmark's speed over this one's
        goal = next((g for prefix, g in GOALS.items() if name.startswith(prefix)), None)
        rows[name] = {
            "images_per_s": images / statistics.median(wall(ts)),
            "backmark_speedup": w_iv.as_dict(),
            "backmark_speedup_cpu": ratio_interval(cpu(ts), cpu(times["backmark"])).as_dict(),
            "goal": goal,
            "verdict": None
            if name == "backmark"
            else verdict_both(times, name, "backmark", target=goal, resolution=RESOLUTION, direction=">="),
        }
    return {
        "model": model_name,
        "dataset": data.name,
        "steps": steps,
        "batch": BATCH,
        "k": K,
        "augment": augment,
        "rounds": len(times["backmark"]),
        "arms": rows,
        "resolution": RESOLUTION,
        "samples": {a: [[t.wall, t.cpu] for t in ts] for a, ts in times.items()},
        "config": cfg.to_dict(),
    }


def markdown(rows: list[dict]) -> str:
    lines = [
        "| model | precision | pipeline | rounds | images/s | backmark / this, wall [95%] | CPU [95%] | verdict |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        for name, a in r["arms"].items():
            ratio = "1" if name == "backmark" else interval_text(a["backmark_speedup"], 2)
            ratio_cpu = "1" if name == "backmark" else interval_text(a["backmark_speedup_cpu"], 2)
            lines.append(
                f"| {r['model']} | {r['config']['precision']} | {name} | {r['rounds']} | {a['images_per_s']:.0f} | "
                f"{ratio} | {ratio_cpu} | "
                f"{a['verdict'] or ''} |"
            )
    return "\n".join(lines)


def run(args) -> dict:
    use_malloc(getattr(args, "system_malloc", False))
    device = torch.device(args.device)
    rows = [throughput(m, args.steps or STEPS[m], args.workers, device, args) for m in args.models]
    overhead = [] if args.no_overhead else [embed_overhead(m, OVERHEAD_STEPS[m], device, args) for m in args.models]
    return {"environment": environment(device), "throughput": rows, "embed_overhead": overhead}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_common_args(p, ["fmnist-cnn", "cifar-fast"])
    p.add_argument("--workers", type=int, nargs="+", default=[0], help="DataLoader workers for the official-style pipeline.")
    p.add_argument("--no-overhead", action="store_true", help="Skip the FROMSCRATCH vs NO-WM comparison.")
    args = p.parse_args()
    result = run(args)
    print(json.dumps(result["environment"]))
    print(markdown(result["throughput"]))
    if result["embed_overhead"]:
        print("\n" + overhead_markdown(result["embed_overhead"]))
    if args.json_out:
        with open(args.json_out, "w") as f:
            json.dump(result, f, indent=1)


if __name__ == "__main__":
    main()
