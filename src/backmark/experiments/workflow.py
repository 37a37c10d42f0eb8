"""File-level recipes shared by the CLI, the demo and the experiments: build or load a
model (registered, or a user's through a factory), train or mark it with a resumable state
file next to the output, save a checkpoint that records its dataset, config and watermark.

A run never silently changes or discards another: a state file is continued only with
``resume`` and the same config and run (data, model, key), deleted only with ``force``.
After marking, :func:`weak_watermark_warning` says when the trigger accuracy stayed below
what verification needs (the CLI warns and exits 1; the checkpoint is written all the same).
"""
from __future__ import annotations

import time
from collections.abc import Callable
from fractions import Fraction
from pathlib import Path

import torch
from torch import nn

from ..core.keygen import MarkingKey, VerificationKey, check_pair
from ..core.mark import mark_from_scratch, mark_pretrained
from ..core.stats import DEFAULT_ALPHA, threshold
from ..core.triggers import exclude_triggers
from ..data import Dataset
from ..errors import IncompatibleModel, InvalidConfig, OutputExists
from ..io.files import check_writable
from ..io.hashing import file_sha256
from ..models import AdaptedModel, build_model, create_model, open_model
from ..models.adapt import module_device
from ..models.checkpoint import save_model
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
    """Check the output, the saved state and the key before any work; return the state file's path."""
    state = state_path_for(out)
    if not (resume and state.exists()):
        check_writable(out, force=force)
    if state.exists() and not resume:
        if not force:
            raise OutputExists(
                f"{state} holds the training state of an interrupted run: pass --resume to continue it, "
                "or --force to start afresh (deletes it)"
            )
        if is_main_process():  # a fresh run never reads it, so the other ranks need not wait for this
            state.unlink(missing_ok=True)
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


def _run_info(mode: str, data: Dataset, model: nn.Module, model_name, factory, vk, **extra) -> dict:
    """What defines a run besides its TrainConfig: saved in the state file, compared by --resume."""
    return {"mode": mode, "dataset": data.name, "train_size": len(data.train_y), "test_size": len(data.test_y),
            "model": model_name, "model_factory": factory, "input_normalization": getattr(model, "normalization", None),
            "verification_key": None if vk is None else vk.fingerprint, **extra}


def _finish(out, model, data, cfg, history, mode, vk, started, extra, force) -> dict:
    meta = {
        **data_meta(data),
        "model": extra.pop("model_name"),
        "config": cfg.to_dict(),
        "history": [h.as_dict() for h in history],
        "watermark": None if vk is None else {"mode": mode, "verification_key": vk.fingerprint, "k": cfg.trigger_k,
                                              **watermark_strength(history, vk)},
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


def _user_model(factory, mean, std, model_name, data: Dataset, seed: int) -> tuple[nn.Module, str | None]:
    """A fresh model: the registered ``model_name``, or the factory's module (behind its adaptor)."""
    if (factory is None) == (model_name is None):
        raise InvalidConfig("give a registered model name or a model factory (one of them)")
    if factory is None:
        if mean is not None or std is not None:
            raise InvalidConfig("--mean/--std go with --model-factory: built-in models normalise their inputs themselves")
        return new_model(model_name, data, seed), None
    label = factory_label(factory)
    try:
        model = AdaptedModel(build_model(factory, seed=seed), mean=mean, std=std, name=label)
    except ValueError as e:
        raise InvalidConfig(f"--mean/--std: {e}") from None
    check_outputs(model, data, label)
    return model, label


def factory_label(factory) -> str:
    """How a checkpoint names the factory that built its model: ``MODULE:CALLABLE``."""
    if isinstance(factory, str):
        return factory
    return f"{getattr(factory, '__module__', '?')}:{getattr(factory, '__qualname__', repr(factory))}"


def check_outputs(model: nn.Module, data: Dataset, label: str) -> None:
    """Refuse, before training, a model whose scores do not have the data's class count."""
    was = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        with torch.no_grad():
            out = model(torch.zeros(2, *data.input_shape, device=module_device(model)))
    except RuntimeError as e:
        first = str(e).splitlines()[0]
        raise IncompatibleModel(f"{label} cannot take {data.name} images {data.input_shape} (C, H, W): {first}") from None
    finally:
        for m, training in was:
            m.training = training
    if tuple(out.shape) != (2, data.num_classes):
        raise IncompatibleModel(
            f"{label} answers scores of shape {tuple(out.shape[1:])} per image, but {data.name} has {data.num_classes} classes"
        )


def train_file(
    *,
    data: Dataset,
    model_name: str | None = None,
    cfg: TrainConfig,
    out: str | Path,
    keys: tuple[MarkingKey, VerificationKey] | None = None,
    force: bool = False,
    resume: bool = False,
    device=None,
    reporter: Reporter | None = None,
    factory=None,
    mean=None,
    std=None,
    say: Callable[[str], None] = lambda m: None,
) -> tuple[nn.Module, list[EpochStats]]:
    """Train from scratch (NO-WM, or FROMSCRATCH with ``keys``) and save to ``out``.

    The model is the registered ``model_name``, or ``factory``'s (``MODULE:CALLABLE`` or a
    callable returning an nn.Module; ``mean``/``std``: the normalisation its forward expects,
    recorded in the checkpoint). With a key, the training images that are its triggers (heldout
    triggers) are left out, and that is said with ``say``. A state file from an interrupted run is continued with
    ``resume`` (the same config and run only), deleted with ``force``, else refused.
    """
    started = time.perf_counter()
    state = _start(out, force=force, resume=resume, data=data, keys=keys)
    if keys is None and cfg.hardening != "none":
        raise InvalidConfig("margin hardening hardens a watermark's triggers: it needs a marking key")
    data, dropped = _without_triggers(data, keys, say)
    model, label = _user_model(factory, mean, std, model_name, data, cfg.seed)
    run = _run_info("train", data, model, model_name, label, keys and keys[1])
    kw = dict(state_path=state, resume=resume, device=device, reporter=reporter, run=run)
    if keys is None:
        history = train(model, data, cfg, **kw)
    else:
        history = mark_from_scratch(model, data, keys[0], cfg, **kw)
    extra = {"model_name": model_name, **({"model_factory": label} if label else {}),
             **({"excluded_trigger_images": dropped} if keys is not None else {})}
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
    factory=None,
    mean=None,
    std=None,
    say: Callable[[str], None] = lambda m: None,
) -> tuple[nn.Module, list[EpochStats]]:
    """PRETRAINED: fine-tune the model at ``model_path`` with the trigger set, save to ``out``.

    ``model_path``: a checkpoint of a registered model, or with ``factory`` any weights file of
    the factory's module (backmark checkpoint, plain safetensors, torch.save state dict). The
    training images that are the key's triggers are left out (said with ``say``).
    """
    started = time.perf_counter()
    state = _start(out, force=force, resume=resume, data=data, keys=keys)
    data, dropped = _without_triggers(data, keys, say)
    label = None if factory is None else factory_label(factory)
    model, meta = open_model(model_path, factory=factory, mean=mean, std=std)
    if label:
        check_outputs(model, data, label)
    mk, vk = keys
    run = _run_info("embed", data, model, meta.get("model"), label, vk, until=until, hold=hold,
                    source_sha256=file_sha256(model_path))
    history = mark_pretrained(model, data, mk, cfg, until=until, hold=hold, state_path=state, resume=resume, device=device,
                              reporter=reporter, run=run)
    source = {"path": str(model_path), "sha256": run["source_sha256"], "history": meta.get("history"),
              "config": meta.get("config")}  # config: the training the attacks take as the victim's recipe
    extra = {"model_name": meta.get("model"), "pretrained_from": source, "until": until, "hold": hold,
             "excluded_trigger_images": dropped,
             **({"model_factory": label} if label else {})}
    _finish(out, model, data, cfg, history, "PRETRAINED", vk, started, extra, force or resume)
    return model, history


def watermark_strength(history: list[EpochStats], vk: VerificationKey, *, alpha: float = DEFAULT_ALPHA) -> dict:
    """The final trigger accuracy beside what verification needs at ``alpha``: {"trigger_acc", "needed", "held"}.

    ``needed`` is the threshold's share of one verification's triggers (the whole key; for a
    key of several sets, one set at the one-time verification's split alpha), with the null
    rate of derived labels, 1/classes (a key of given labels can need more).
    """
    from ..protocols.pverify import set_alpha

    n, a = (vk.size, alpha) if vk.num_sets == 1 else (vk.set_size, set_alpha(alpha, vk.num_sets))
    needed = threshold(n, Fraction(1, vk.num_classes), a) / n
    acc = history[-1].trigger_acc if history else None
    return {"trigger_acc": acc, "needed": needed, "held": acc is not None and acc >= needed}


def weak_watermark_warning(history: list[EpochStats], vk: VerificationKey | None, *, cfg: TrainConfig, mode: str,
                           until: float | None = None, out=None) -> str | None:
    """One line saying the watermark did not take (below :func:`watermark_strength`'s need) and what
    to change; None when it took, or when nothing was marked (``vk`` None)."""
    if vk is None:
        return None
    w = watermark_strength(history, vk)
    if w["held"]:
        return None
    acc = "not measured" if w["trigger_acc"] is None else f"{100 * w['trigger_acc']:.1f}%"
    n = len(history)
    what = (f"the watermark did not take: trigger accuracy {acc} after {n} epoch{'' if n == 1 else 's'}, "
            f"but verification at alpha 2^-64 needs {100 * w['needed']:.0f}%")
    if mode == "embed":
        why = f"--until {until:g} stops below that; " if until is not None and until < w["needed"] else ""
        stopped = f"it stopped at the epoch cap ({cfg.epochs}); " if len(history) >= cfg.epochs else ""
        fix = (f"{why}{stopped}raise --epochs (the cap), -k (now {cfg.trigger_k}) or --lr (now {cfg.lr:g}), "
               "or use --until 1 --hold N")
    else:
        fix = (f"train longer (--epochs, now {cfg.epochs}), with more triggers per batch (-k, now {cfg.trigger_k}) "
               f"or another --lr (now {cfg.lr:g})")
    return f"{what}; {fix}" + (f"; {out} was written all the same" if out else "")
