"""File-level recipes shared by the CLI, the demo and the experiments: build or load a
model, train or mark it with a resumable state file next to the output, save a
checkpoint that records its dataset, config and watermark.
"""
from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

from torch import nn

from ..core.keygen import MarkingKey, VerificationKey, check_pair
from ..core.mark import mark_from_scratch, mark_pretrained
from ..core.triggers import exclude_triggers
from ..data import Dataset
from ..errors import IncompatibleModel, InvalidConfig
from ..io.files import check_writable
from ..models import create_model
from ..models.checkpoint import load_model, save_model
from ..training import EpochStats, Reporter, TrainConfig, train
from ..training.distributed import barrier, is_main_process


def state_path_for(out: str | Path) -> Path:
    """Where a run writing ``out`` keeps its per-epoch training state."""
    out = Path(out)
    return out.with_name(out.name + ".state")


def data_meta(data: Dataset) -> dict:
    return {
        "dataset": data.name,
        "num_classes": data.num_classes,
        "input_shape": list(data.input_shape),
        "mean": list(data.mean),
        "std": list(data.std),
        "classes": list(data.classes),
    }


def new_model(name: str, data: Dataset, seed: int) -> nn.Module:
    """A fresh registered model for ``data``, its initial weights drawn from ``seed``."""
    return create_model(name, num_classes=data.num_classes, input_shape=data.input_shape, mean=data.mean, std=data.std, seed=seed)


def check_key_fits(vk: VerificationKey, data: Dataset) -> None:
    if vk.input_shape != data.input_shape or vk.num_classes != data.num_classes:
        raise IncompatibleModel(
            f"the key is for inputs {vk.input_shape} with {vk.num_classes} classes, "
            f"but {data.name} has {data.input_shape} with {data.num_classes}; make a key with --dataset {data.name}"
        )


def _start(out, *, force: bool, resume: bool, data: Dataset, keys) -> Path:
    """Check the output and the key before any work; return the state file's path."""
    state = state_path_for(out)
    if not (resume and state.exists()):
        check_writable(out, force=force)
    if keys is not None:
        check_pair(*keys)
        check_key_fits(keys[1], data)
    return state


def _without_triggers(data: Dataset, keys, say: Callable[[str], None]) -> tuple[Dataset, int]:
    """``data`` without the key's trigger images (heldout triggers are training images), said when any are dropped."""
    if keys is None:
        return data, 0
    data, dropped = exclude_triggers(data, keys[0].images)
    if dropped:
        say(f"training without {dropped} image(s) of the training set that are the key's trigger images "
            f"({len(data.train_y)} left)")
    return data, dropped


def _finish(out, model, data, cfg, history, mode, vk, started, extra, force) -> dict:
    meta = {
        **data_meta(data),
        "model": extra.pop("model_name"),
        "config": cfg.to_dict(),
        "history": [h.as_dict() for h in history],
        "watermark": None if vk is None else {"mode": mode, "verification_key": vk.fingerprint, "k": cfg.trigger_k},
        "wall_seconds": time.perf_counter() - started,
        **extra,
    }
    state = state_path_for(out)
    if is_main_process():  # under torchrun rank 0 alone writes
        save_model(out, model, meta, force=force)
        if state.exists():
            state.unlink()
    barrier()  # under torchrun every rank returns once the checkpoint exists
    return meta


def train_file(
    *,
    data: Dataset,
    model_name: str,
    cfg: TrainConfig,
    out: str | Path,
    keys: tuple[MarkingKey, VerificationKey] | None = None,
    force: bool = False,
    resume: bool = False,
    device=None,
    reporter: Reporter | None = None,
    say: Callable[[str], None] = lambda m: None,
) -> tuple[nn.Module, list[EpochStats]]:
    """Train from scratch (NO-WM, or FROMSCRATCH with ``keys``) and save to ``out``. With a key,
    the training images that are its triggers (heldout triggers) are left out, and that is said."""
    started = time.perf_counter()
    state = _start(out, force=force, resume=resume, data=data, keys=keys)
    if keys is None and cfg.hardening != "none":
        raise InvalidConfig("margin hardening hardens a watermark's triggers: it needs a marking key")
    data, dropped = _without_triggers(data, keys, say)
    model = new_model(model_name, data, cfg.seed)
    kw = dict(state_path=state, resume=resume, device=device, reporter=reporter)
    if keys is None:
        history = train(model, data, cfg, **kw)
    else:
        history = mark_from_scratch(model, data, keys[0], cfg, **kw)
    extra = {"model_name": model_name, **({"excluded_trigger_images": dropped} if keys is not None else {})}
    _finish(out, model, data, cfg, history, "FROMSCRATCH", keys and keys[1], started, extra, force or resume)
    return model, history


def embed_file(
    *,
    data: Dataset,
    model_path: str | Path,
    cfg: TrainConfig,
    out: str | Path,
    keys: tuple[MarkingKey, VerificationKey],
    until: float = 1.0,
    hold: int = 0,
    force: bool = False,
    resume: bool = False,
    device=None,
    reporter: Reporter | None = None,
    say: Callable[[str], None] = lambda m: None,
) -> tuple[nn.Module, list[EpochStats]]:
    """PRETRAINED: fine-tune the checkpoint at ``model_path`` with the trigger set (without the
    training images that are its triggers), save to ``out``."""
    started = time.perf_counter()
    state = _start(out, force=force, resume=resume, data=data, keys=keys)
    data, dropped = _without_triggers(data, keys, say)
    model, meta = load_model(model_path)
    mk, vk = keys
    history = mark_pretrained(model, data, mk, cfg, until=until, hold=hold, state_path=state, resume=resume, device=device, reporter=reporter)
    extra = {"model_name": meta["model"], "pretrained_from": {"path": str(model_path), "history": meta.get("history")},
             "until": until, "hold": hold, "excluded_trigger_images": dropped}
    _finish(out, model, data, cfg, history, "PRETRAINED", vk, started, extra, force or resume)
    return model, history
