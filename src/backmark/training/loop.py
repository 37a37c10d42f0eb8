"""Training: one short loop for NO-WM, FROMSCRATCH and PRETRAINED alike.

Data lives as uint8 tensors on the training device (when it fits; otherwise in host
memory, each batch copied through pinned memory); each step slices a random
permutation, converts to float, augments in batch, and (when marking) appends k trigger
images. After each epoch: test accuracy, trigger accuracy, and a checkpoint of the full
training state, so ``resume=True`` after a crash loses at most one epoch.

    cfg = TrainConfig(epochs=3)
    history = train(model, dataset, cfg)                          # NO-WM
    history = train(model, dataset, cfg, mixer=TriggerMixer.from_key(mk, k=cfg.trigger_k))  # marking

The loop knows nothing of keys: a ``mixer`` (anything with the :class:`Mixer` interface,
backmark's own is :class:`backmark.core.mark.TriggerMixer`) appends its images to each batch.
Under torchrun the same call trains data-parallel (:mod:`backmark.training.distributed`). Speed
options: ``precision="bf16"`` (autocast), ``channels_last``, ``compile`` (torch.compile,
off by default), ``data_on_device``.
"""
from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable
from contextlib import nullcontext
from pathlib import Path
from typing import Protocol

import torch
import torch.nn.functional as F
from torch import nn

from ..data import Dataset, augment, num_batches
from . import distributed
from .config import EpochStats, Reporter, TrainConfig
from .layers import trainable_parameters
from .state import check_resume, load_state, save_state

SHORT_EPOCH_TEST_IMAGES = 1000  # cfg.epoch_steps: test images scored after each short epoch but the last (all of them)
DEVICE_DATA_FRACTION = 0.25  # data_on_device=None: keep the training set on the GPU if it takes at most this much of its free memory


class Mixer(Protocol):
    """What the loop needs of a trigger mixer (see backmark.core.mark.TriggerMixer)."""

    k: int  # images appended to each global batch
    inputs: torch.Tensor  # (N, C, H, W) float: the trigger set as the model sees it, scored after every epoch
    labels: torch.Tensor  # (N,)

    def to(self, device) -> "Mixer": ...
    def reseed(self, seed: int) -> None: ...
    def mix(self, x: torch.Tensor, y: torch.Tensor, *, share: slice | None = None,
            model: nn.Module | None = None) -> tuple[torch.Tensor, torch.Tensor]: ...


def default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


@torch.no_grad()
def _per_batch(model: nn.Module, x: torch.Tensor, batch_size: int, device, keep) -> list[torch.Tensor]:
    """``keep(model(batch))`` on the CPU for each batch of uint8 (or [0, 1] float) images, in eval mode."""
    device = device or next(model.parameters()).device
    was_training = model.training
    model.eval()
    out = []
    for i in range(0, len(x), batch_size):
        xb = x[i : i + batch_size].to(device, non_blocking=True)
        out.append(keep(model(xb.float() / 255 if xb.dtype == torch.uint8 else xb.float())).cpu())
    model.train(was_training)
    return out


def predict(model: nn.Module, x: torch.Tensor, *, batch_size: int = 1000, device=None) -> torch.Tensor:
    """Predicted labels for uint8 (or [0, 1] float) images (N, C, H, W)."""
    out = _per_batch(model, x, batch_size, device, lambda scores: scores.argmax(1))
    return torch.cat(out) if out else torch.empty(0, dtype=torch.long)


def logits(model: nn.Module, x: torch.Tensor, *, batch_size: int = 1000, device=None) -> torch.Tensor:
    """The model's raw outputs (N, classes), float on the CPU, for uint8 (or [0, 1] float) images (N, C, H, W)."""
    out = _per_batch(model, x, batch_size, device, lambda scores: scores.float())
    return torch.cat(out) if out else torch.empty(0)


def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor, **kw) -> float:
    return (predict(model, x, **kw) == y.cpu()).float().mean().item() if len(y) else float("nan")


def use_compile(cfg: TrainConfig, device: torch.device | str) -> bool:
    """Whether ``cfg`` compiles the model on ``device`` ("auto": CUDA only)."""
    return cfg.compile == "on" or (cfg.compile == "auto" and torch.device(device).type == "cuda")


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
    mixer: Mixer | None = None,
    params=None,
    state_path: str | Path | None = None,
    resume: bool = False,
    device: torch.device | str | None = None,
    reporter: Reporter | None = None,
    stop_when: Callable[[EpochStats], bool] | None = None,
    targets: torch.Tensor | None = None,
    batch_hook: Callable[[nn.Module, torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
    run: dict | None = None,
) -> list[EpochStats]:
    """Train ``model`` in place; returns per-epoch stats.

    ``targets``: (N, C) class probabilities, one row per training image, trained on instead of
    ``data.train_y`` (soft-label distillation; cross-entropy against them). ``batch_hook(model,
    x, y) -> x``: replaces each step's clean images before triggers are appended (adversarial
    fine-tuning perturbs them there).

    ``mixer`` marks the model (k trigger images appended to each batch). ``params``
    restricts which parameters are trained (the FTLL/RTLL attacks; else ``cfg.layers``); the
    others are frozen while training. ``state_path``: where the full training state is saved after
    every epoch; with ``resume=True`` an existing state there is continued.
    ``stop_when(stats)`` ends training early (after ``cfg.cooldown_steps`` more steps at a learning
    rate falling to 0, if set). ``run``: what else defines the run (data, model,
    key; JSON-able), saved in the state with the config; given it, a resume that changes either
    is refused (:func:`~backmark.training.state.check_resume`; without it, a resume may extend
    ``cfg.epochs``). Under torchrun this runs data-parallel:
    rank 0 alone saves the state and reports progress; the stats are global.
    """
    ctx = distributed.setup(device)
    device = ctx.device
    reporter = reporter if ctx.is_main else None
    fmt = torch.channels_last if cfg.channels_last else torch.contiguous_format
    model.to(device=device, memory_format=fmt)
    on_device = cfg.data_on_device if cfg.data_on_device is not None else _fits(data.train_x, device)
    data_dev = device if on_device else torch.device("cpu")
    train_x, train_y = data.train_x.to(data_dev), data.train_y.to(data_dev)  # uint8 images stay uint8 until a batch is drawn
    if targets is not None:
        if mixer is not None or targets.dim() != 2 or len(targets) != len(train_y) or not targets.is_floating_point():
            raise ValueError("targets must be float (N, C) probabilities, one row per training image, and go without a mixer")
        train_y = targets.to(data_dev)
    if mixer is not None:
        mixer = mixer.to(device)  # trigger images live where the batches are built
    if params is None and cfg.layers != "all":
        params = trainable_parameters(model, cfg.layers)
    params = list(params) if params is not None else None
    frozen = _frozen(model, params)
    opt = make_optimizer(params if params is not None else model.parameters(), cfg)
    steps_per_epoch = num_batches(len(train_y), cfg.batch_size, drop_last=False)
    if cfg.epoch_steps is not None:  # a short epoch: the first epoch_steps batches of the epoch's permutation
        steps_per_epoch = min(steps_per_epoch, cfg.epoch_steps)
    history: list[EpochStats] = []
    start_epoch = 0
    state = _resume_state(state_path, ctx) if resume else None
    if state is not None:
        if run is not None:  # the caller describes its run (train_file and embed_file always do): hold it to it
            check_resume(state, cfg, run, state_path)
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        history = [EpochStats(**h) for h in state["history"]]
        start_epoch = state["epoch"]
    net = ctx.wrap(model)
    net = torch.compile(net) if use_compile(cfg, device) else net
    step = _Stepper(net, opt, cfg, ctx, fmt, steps_per_epoch, reporter)
    # Short epochs are checks of the stopping rule, not passes: between them score only part of the test set
    score_n = SHORT_EPOCH_TEST_IMAGES if cfg.epoch_steps is not None else len(data.test_y)
    score_x, score_y = data.test_x[:score_n], data.test_y[:score_n]
    try:
        for epoch in range(start_epoch, cfg.epochs):
            t0 = time.perf_counter()
            seed = cfg.seed * 100_003 + epoch  # per-epoch seed: a resumed run replays the same order
            if mixer is not None:
                mixer.reseed(seed)
            if reporter:
                reporter.start_epoch(epoch + 1, cfg.epochs, steps_per_epoch)
            _train_mode(model, cfg)
            shares = _shares(train_x, train_y, mixer, cfg, ctx, seed, steps_per_epoch, model, batch_hook)
            loss_sum, seen, lr = step.epoch(epoch, shares)
            ctx.sync_buffers(model)
            total_loss, total_seen = ctx.all_sum([loss_sum, seen])
            stats = EpochStats(
                epoch=epoch + 1,
                train_loss=total_loss / max(total_seen, 1),
                test_acc=_accuracy(model, score_x, score_y, ctx),
                trigger_acc=_accuracy(model, mixer.inputs, mixer.labels, ctx) if mixer is not None else None,
                seconds=time.perf_counter() - t0,
                lr=lr,
            )
            fired = step.cooled is None and stop_when is not None and stop_when(stats)  # it sees every epoch until it fires
            ends = step.cooled_down or epoch + 1 == cfg.epochs or (fired and not cfg.cooldown_steps)
            if ends and len(score_y) < len(data.test_y):  # the last epoch is scored on the whole test set
                stats = dataclasses.replace(stats, test_acc=_accuracy(model, data.test_x, data.test_y, ctx),
                                            seconds=time.perf_counter() - t0)
            history.append(stats)
            if state_path is not None and ctx.is_main:
                save_state(state_path, {"epoch": epoch + 1, "model": model.state_dict(), "optimizer": opt.state_dict(),
                                        "history": [h.as_dict() for h in history], "config": cfg.to_dict(), "run": run or {}})
            if reporter:
                reporter.end_epoch(stats)
            if ends:
                break
            if fired:
                step.cooled = 0  # settle first: cfg.cooldown_steps more steps at a falling learning rate, then stop
    finally:
        for p in frozen:
            p.requires_grad_(True)
    model.eval()
    return history


def _train_mode(model: nn.Module, cfg: TrainConfig) -> None:
    model.train()
    if cfg.bn_stats == "frozen":
        for m in model.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.eval()  # normalise with the running statistics, and leave them as they are


class _Stepper:
    """The optimizer steps of one epoch: learning rate (schedule, then the cool-down), loss, update, progress."""

    def __init__(self, net, opt, cfg: TrainConfig, ctx: distributed.Context, fmt, steps_per_epoch: int, reporter):
        self.net, self.opt, self.cfg, self.ctx, self.fmt, self.reporter = net, opt, cfg, ctx, fmt, reporter
        self.steps_per_epoch, self.total_steps = steps_per_epoch, cfg.epochs * steps_per_epoch
        self.cooled: int | None = None  # cool-down steps taken, once stop_when has fired (cfg.cooldown_steps > 0)
        self.autocast = torch.autocast(ctx.device.type, dtype=torch.bfloat16) if cfg.precision == "bf16" else nullcontext()

    @property
    def cooled_down(self) -> bool:
        return self.cooled is not None and self.cooled >= self.cfg.cooldown_steps

    def epoch(self, epoch: int, shares) -> tuple[float, int, float]:
        """Train on ``shares``; this rank's (summed loss, images seen) and the last learning rate."""
        cfg, ctx = self.cfg, self.ctx
        loss_sum, seen, lr = torch.zeros((), device=ctx.device), 0, cfg.lr
        for i, x, y, n in shares:
            lr = cfg.lr * _lr_factor(cfg, epoch * self.steps_per_epoch + i, self.total_steps, self.steps_per_epoch)
            if self.cooled is not None:  # linear decay towards 0: step j of C at lr x (C + 1 - j) / (C + 1)
                self.cooled += 1
                lr *= (cfg.cooldown_steps + 1 - self.cooled) / (cfg.cooldown_steps + 1)
            for group in self.opt.param_groups:
                group["lr"] = lr
            with self.autocast:
                summed = F.cross_entropy(self.net(x.contiguous(memory_format=self.fmt)), y, reduction="sum",
                                         label_smoothing=cfg.label_smoothing)
            loss = summed * (ctx.world_size / n)  # DDP averages over ranks: the mean over the global batch of n
            self.opt.zero_grad(set_to_none=True)
            loss.backward()
            self.opt.step()
            loss_sum += summed.detach()
            seen += len(y)
            if self.reporter:
                self.reporter.step(loss.item() if i % 20 == 0 else float("nan"))
            if self.cooled_down:
                break
        return loss_sum.item(), seen, lr


def _shares(train_x, train_y, mixer: Mixer | None, cfg: TrainConfig, ctx: distributed.Context, seed: int, steps: int,
            model: nn.Module, batch_hook=None):
    """Yield (step, x, y, n) for one epoch: this rank's share of each global batch of n = B + k images.

    ``x`` is float in [0, 1] (augmented if ``cfg.augment``), on the training device; the
    clean images come from one permutation of the training set (the same on every rank),
    the k triggers from ``mixer.mix`` (every rank draws the same k and appends its share).
    """
    device, k = ctx.device, (mixer.k if mixer is not None else 0)
    order = torch.randperm(len(train_y), generator=torch.Generator().manual_seed(seed)).to(train_x.device)
    gen = torch.Generator(device=device)
    gen.manual_seed(seed * 1009 + ctx.rank)  # augmentation: each rank its own stream
    for i in range(steps):
        idx = order[i * cfg.batch_size : (i + 1) * cfg.batch_size]  # this step's global batch
        if len(idx) + k < ctx.world_size:
            continue  # a last batch too small to give every rank an image
        mine, my_triggers = distributed.split_batch(len(idx), k, ctx.rank, ctx.world_size)
        x = _to(train_x[idx[mine]], device).float().div_(255)  # gathered where the data lives
        y = _to(train_y[idx[mine]], device)
        if cfg.augment:
            x = augment(x, generator=gen)
        if batch_hook is not None:
            x = batch_hook(model, x, y)
        if k:
            x, y = mixer.mix(x, y, share=my_triggers if ctx.world_size > 1 else None, model=model)
        yield i, x, y, len(idx) + k


def _to(t: torch.Tensor, device: torch.device) -> torch.Tensor:
    """``t`` on ``device``; from host memory through pinned memory, so that the copy does not stall the GPU queue."""
    if t.device == device:
        return t
    if device.type == "cuda" and t.device.type == "cpu":
        return t.pin_memory().to(device, non_blocking=True)
    return t.to(device)


def _fits(x: torch.Tensor, device: torch.device) -> bool:
    if device.type != "cuda":
        return True  # CPU: already there; other accelerators: assume it fits
    free, _ = torch.cuda.mem_get_info(device)
    return x.nbytes <= DEVICE_DATA_FRACTION * free


def _frozen(model: nn.Module, params: list | None) -> list[nn.Parameter]:
    """Freeze the model's parameters outside ``params`` (no gradients computed or all-reduced); returns them."""
    if params is None:
        return []
    chosen = {id(p) for item in params for p in (item["params"] if isinstance(item, dict) else [item])}
    frozen = [p for p in model.parameters() if p.requires_grad and id(p) not in chosen]
    for p in frozen:
        p.requires_grad_(False)
    return frozen


def _resume_state(state_path, ctx: distributed.Context) -> dict | None:
    """The saved training state, read by rank 0 and sent to all ranks (None if there is none)."""
    state = None
    if ctx.is_main and state_path is not None and Path(state_path).exists():
        state = load_state(state_path)
    return ctx.broadcast(state)


def _accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor, ctx: distributed.Context) -> float:
    """Accuracy over all of (x, y), each rank scoring every W-th image."""
    if ctx.world_size == 1:
        return accuracy(model, x, y, device=ctx.device)
    share = slice(ctx.rank, None, ctx.world_size)
    correct = (predict(model, x[share], device=ctx.device) == y[share].cpu()).sum().item()
    correct, n = ctx.all_sum([correct, len(y[share])])
    return correct / n if n else float("nan")
