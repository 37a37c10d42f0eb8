"""Training: one short loop for NO-WM, FROMSCRATCH and PRETRAINED alike.

Data lives as uint8 tensors on the training device; each step slices a random
permutation, converts to float, augments in batch, and (when marking) appends k trigger
images. After each epoch: test accuracy, trigger accuracy, and a checkpoint of the full
training state, so ``resume=True`` after a crash loses at most one epoch.

    cfg = TrainConfig(epochs=3)
    history = train(model, dataset, cfg, mixer=TriggerMixer.from_key(mk, k=cfg.trigger_k))
"""
from __future__ import annotations

import dataclasses
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Protocol

import torch
import torch.nn.functional as F
from torch import nn

from .checkpoint import load_state, save_state
from .data import Dataset, augment, batches, num_batches
from .mixer import TriggerMixer

SCHEDULES = ("onecycle", "cosine", "step", "constant")
OPTIMIZERS = ("sgd", "adam")


@dataclass(frozen=True)
class TrainConfig:
    """Every choice of a training run; saved into each checkpoint."""

    epochs: int = 3
    batch_size: int = 128
    optimizer: str = "sgd"
    lr: float = 0.05
    momentum: float = 0.9
    weight_decay: float = 5e-4
    schedule: str = "onecycle"  # per-step: 20% linear warm-up then linear decay to 0
    step_epochs: int = 20  # schedule "step": lr x step_gamma every step_epochs
    step_gamma: float = 0.1
    augment: bool = False  # random crop (pad 4) + horizontal flip, in batch
    trigger_k: int = 2  # trigger images appended to each batch when marking
    label_smoothing: float = 0.0
    seed: int = 0
    channels_last: bool = True

    def __post_init__(self):
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"optimizer must be one of {OPTIMIZERS}, not {self.optimizer!r}")
        if self.schedule not in SCHEDULES:
            raise ValueError(f"schedule must be one of {SCHEDULES}, not {self.schedule!r}")
        if self.epochs < 1 or self.batch_size < 1 or self.lr <= 0 or self.trigger_k < 0:
            raise ValueError("epochs, batch_size and lr must be positive, trigger_k >= 0")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "TrainConfig":
        unknown = set(d) - {f.name for f in dataclasses.fields(cls)}
        if unknown:
            raise ValueError(f"unknown training options: {', '.join(sorted(unknown))}")
        return cls(**d)

    def replace(self, **changes) -> "TrainConfig":
        return dataclasses.replace(self, **{k: v for k, v in changes.items() if v is not None})


@dataclass
class EpochStats:
    epoch: int  # 1-based
    train_loss: float
    test_acc: float
    trigger_acc: float | None
    seconds: float
    lr: float

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)


class Reporter(Protocol):
    """Progress hooks (the CLI draws a progress bar with them)."""

    def start_epoch(self, epoch: int, epochs: int, steps: int) -> None: ...
    def step(self, loss: float) -> None: ...
    def end_epoch(self, stats: EpochStats) -> None: ...


def default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


@torch.no_grad()
def predict(model: nn.Module, x: torch.Tensor, *, batch_size: int = 1000, device=None) -> torch.Tensor:
    """Predicted labels for uint8 (or [0, 1] float) images (N, C, H, W)."""
    device = device or next(model.parameters()).device
    was_training = model.training
    model.eval()
    out = []
    for i in range(0, len(x), batch_size):
        xb = x[i : i + batch_size].to(device, non_blocking=True)
        xb = xb.float() / 255 if xb.dtype == torch.uint8 else xb.float()
        out.append(model(xb).argmax(1).cpu())
    model.train(was_training)
    return torch.cat(out) if out else torch.empty(0, dtype=torch.long)


def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor, **kw) -> float:
    return (predict(model, x, **kw) == y.cpu()).float().mean().item() if len(y) else float("nan")


def _lr_factor(cfg: TrainConfig, step: int, total: int, steps_per_epoch: int) -> float:
    if cfg.schedule == "onecycle":
        warm = max(1, int(0.2 * total))
        return (step + 1) / warm if step < warm else max(0.0, (total - step) / max(1, total - warm))
    if cfg.schedule == "cosine":
        return 0.5 * (1 + math.cos(math.pi * step / total))
    if cfg.schedule == "step":
        return cfg.step_gamma ** ((step // steps_per_epoch) // cfg.step_epochs)
    return 1.0


def make_optimizer(params, cfg: TrainConfig) -> torch.optim.Optimizer:
    if cfg.optimizer == "adam":
        return torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay, nesterov=cfg.momentum > 0)


def train(
    model: nn.Module,
    data: Dataset,
    cfg: TrainConfig,
    *,
    mixer: TriggerMixer | None = None,
    params=None,
    state_path: str | Path | None = None,
    resume: bool = False,
    device: torch.device | str | None = None,
    reporter: Reporter | None = None,
    stop_when: Callable[[EpochStats], bool] | None = None,
) -> list[EpochStats]:
    """Train ``model`` in place; returns per-epoch stats.

    ``mixer`` marks the model (k trigger images appended to each batch). ``params``
    restricts which parameters are trained (the FTLL/RTLL attacks). ``state_path``:
    where the full training state is saved after every epoch; with ``resume=True`` an
    existing state there is continued. ``stop_when(stats)`` ends training early.
    """
    device = torch.device(device) if device is not None else default_device()
    fmt = torch.channels_last if cfg.channels_last else torch.contiguous_format
    model.to(device=device, memory_format=fmt)
    train_x, train_y = data.train_x.to(device), data.train_y.to(device)
    opt = make_optimizer(list(params) if params is not None else model.parameters(), cfg)
    steps_per_epoch = num_batches(len(train_y), cfg.batch_size, drop_last=False)
    total_steps = cfg.epochs * steps_per_epoch
    history: list[EpochStats] = []
    start_epoch = 0
    if resume and state_path is not None and Path(state_path).exists():
        state = load_state(state_path)
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        history = [EpochStats(**h) for h in state["history"]]
        start_epoch = state["epoch"]

    for epoch in range(start_epoch, cfg.epochs):
        t0 = time.perf_counter()
        gen = torch.Generator(device=device)
        gen.manual_seed(cfg.seed * 100_003 + epoch)  # per-epoch seed: a resumed run replays the same order
        if mixer is not None:
            mixer.reseed(cfg.seed * 100_003 + epoch)
        if reporter:
            reporter.start_epoch(epoch + 1, cfg.epochs, steps_per_epoch)
        model.train()
        loss_sum, seen = torch.zeros((), device=device), 0
        for i, (xb, yb) in enumerate(batches(train_x, train_y, cfg.batch_size, shuffle=True, generator=gen)):
            step = epoch * steps_per_epoch + i
            lr = cfg.lr * _lr_factor(cfg, step, total_steps, steps_per_epoch)
            for group in opt.param_groups:
                group["lr"] = lr
            x = xb.float().div_(255)
            if cfg.augment:
                x = augment(x, generator=gen)
            if mixer is not None:
                x, yb = mixer.mix(x, yb)
            loss = F.cross_entropy(model(x.contiguous(memory_format=fmt)), yb, label_smoothing=cfg.label_smoothing)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            loss_sum += loss.detach() * len(yb)
            seen += len(yb)
            if reporter:
                reporter.step(loss.item() if i % 20 == 0 else float("nan"))
        stats = EpochStats(
            epoch=epoch + 1,
            train_loss=(loss_sum / max(seen, 1)).item(),
            test_acc=accuracy(model, data.test_x, data.test_y, device=device),
            trigger_acc=accuracy(model, mixer.images, mixer.labels, device=device) if mixer is not None else None,
            seconds=time.perf_counter() - t0,
            lr=lr,
        )
        history.append(stats)
        if state_path is not None:
            save_state(
                state_path,
                {
                    "epoch": epoch + 1,
                    "model": model.state_dict(),
                    "optimizer": opt.state_dict(),
                    "history": [h.as_dict() for h in history],
                    "config": cfg.to_dict(),
                },
            )
        if reporter:
            reporter.end_epoch(stats)
        if stop_when is not None and stop_when(stats):
            break
    model.eval()
    return history
