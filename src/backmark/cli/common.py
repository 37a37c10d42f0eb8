"""Shared pieces of the CLI: error handling, parsing, output, common options."""
from __future__ import annotations

import functools
import json
import os
import sys
import traceback
from pathlib import Path

import click

from ..errors import BackmarkError

# Exit codes (README.md): 0 verified / OK, 1 not verified / rejected, 2 a user's mistake or a
# malformed file (one line), 3 a bug in backmark (one line; BACKMARK_DEBUG=1 shows the traceback).
EXIT_ERROR = 2
EXIT_INTERNAL = 3
DEBUG_ENV = "BACKMARK_DEBUG"


def _one_line(text, limit: int = 500) -> str:
    line = " ".join(part.strip() for part in str(text).splitlines())  # a file name or a message may hold a newline
    return line if len(line) <= limit else line[: limit - 3] + "..."


def _fail(message: str) -> None:
    click.echo(f"error: {_one_line(message, 2000)}", err=True)
    sys.exit(EXIT_ERROR)


def _internal(e: Exception) -> None:
    # Never exit 1 (NOT VERIFIED) or 2 (the user's mistake) for what is a bug: 3, one line.
    if os.environ.get(DEBUG_ENV) == "1":
        traceback.print_exc()
    click.echo(f"internal error: {type(e).__name__}: {_one_line(e)} (a bug in backmark; "
               f"{DEBUG_ENV}=1 shows the traceback)", err=True)
    sys.exit(EXIT_INTERNAL)


def handle_errors(fn):
    """Turn backmark's errors (and OS ones) into exit 2 with one line, anything else into exit 3."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except BackmarkError as e:
            _fail(str(e))
        except PermissionError as e:
            _fail(f"permission denied: {e.filename}")
        except OSError as e:  # the machine, not backmark: a full disk, a vanished folder
            _fail(f"{e.strerror or e}" + (f": {e.filename}" if e.filename else ""))
        except KeyboardInterrupt:
            click.echo("interrupted; rerun with --resume to continue from the last finished epoch", err=True)
            sys.exit(130)
        except (click.ClickException, click.exceptions.Abort, click.exceptions.Exit):
            raise  # click's own: usage errors (exit 2 with their usage line), --help, aborts
        except Exception as e:
            _internal(e)

    return wrapper


def check_seen_at(value: str | None) -> None:
    """A --suspect-seen-at time, as the clock reads it (io.clock.parse_time), or a usage error."""
    from ..io.clock import parse_time

    if value is None:
        return
    try:
        parse_time(value)
    except ValueError:
        raise click.BadParameter(f"{value!r}: write a UTC time such as 2026-06-01T00:00:00Z", param_hint="--suspect-seen-at") from None


def parse_alpha(value: str) -> float:
    """'2^-64', '1e-9' or '0.001' -> float in (0, 1)."""
    try:
        if "^" in value:
            base, exp = value.split("^", 1)
            alpha = float(base) ** float(exp)
        else:
            alpha = float(value)
    except ValueError:
        raise click.BadParameter(f"{value!r} is not a number; write e.g. 2^-64 or 1e-9") from None
    if not 0 < alpha < 1:
        raise click.BadParameter("alpha must lie strictly between 0 and 1")
    return alpha


def alpha_text(alpha: float) -> str:
    """An alpha for people: 2^-64 style when tiny, else three significant digits."""
    import math

    return f"2^{math.log2(alpha):.0f}" if 0 < alpha < 1e-4 else f"{alpha:.3g}"


def parse_shape(value: str | None):
    if value is None:
        return None
    try:
        c, h, w = (int(v) for v in value.lower().split("x"))
    except ValueError:
        raise click.BadParameter(f"{value!r}: write the input shape as CxHxW, e.g. 3x32x32") from None
    return (c, h, w)


def parse_floats(value: str | None, name: str):
    """'0.5,0.5,0.5' -> (0.5, 0.5, 0.5); None stays None."""
    if value is None:
        return None
    try:
        return tuple(float(v) for v in value.split(","))
    except ValueError:
        raise click.BadParameter(f"{value!r}: give comma-separated numbers", param_hint=name) from None


def emit(as_json: bool, doc: dict, text: str) -> None:
    click.echo(json.dumps(doc, indent=2, sort_keys=True) if as_json else text)


# -- shared options ---------------------------------------------------------------

FACTORY_HELP = ("Your own architecture: MODULE:CALLABLE returning a torch.nn.Module (MODULE from PYTHONPATH or the "
                "current folder; importing it runs its code). Its weights: a checkpoint, plain safetensors or "
                "torch.save state dict.")
MEAN_HELP = "Per-channel mean your model's forward expects the inputs normalised with, e.g. 0.4914,0.4822,0.4465 (with --std)."
STD_HELP = "Per-channel std of that normalisation (with --mean)."


def factory_option(fn):
    return click.option("--model-factory", default=None, metavar="MODULE:CALLABLE", help=FACTORY_HELP)(fn)


def normalization_options(fn):
    """--mean/--std for a user's model whose forward expects normalised inputs."""
    fn = click.option("--std", default=None, metavar="S[,S...]", help=STD_HELP)(fn)
    fn = click.option("--mean", default=None, metavar="M[,M...]", help=MEAN_HELP)(fn)
    return fn


def normalization(mean: str | None, std: str | None) -> tuple:
    if (mean is None) != (std is None):
        raise click.UsageError("--mean and --std go together")
    return parse_floats(mean, "--mean"), parse_floats(std, "--std")


def warn_weak_watermark(warning: str | None) -> None:
    """After train/embed: the weak-watermark line on stderr, and exit 1 (the checkpoint is written)."""
    if warning:
        click.echo(f"warning: {warning}", err=True)
        sys.exit(1)


def data_options(fn):
    fn = click.option("--test-size", type=click.IntRange(1), default=None, help="Use a fixed random subset of N test images.")(fn)
    fn = click.option("--train-size", type=click.IntRange(1), default=None, help="Use a fixed random subset of N training images (quick runs).")(fn)
    fn = click.option("--data-dir", type=click.Path(file_okay=False), default=None, help="Where the dataset's files are (overrides every default).")(fn)
    fn = click.option("--dataset", default="fashion-mnist", show_default=True, help="Dataset name; `backmark datasets` lists them.")(fn)
    return fn


def train_options(fn):
    opts = [
        click.option("--epochs", type=click.IntRange(1), default=None, help="Epochs [recipe default]."),
        click.option("--epoch-steps", type=click.IntRange(0), default=None,
                     help="Steps per epoch (each a fresh random part of the data, then scored on 1000 test "
                          "images, the last epoch on all); 0: one pass [recipe]."),
        click.option("--batch-size", type=click.IntRange(1), default=None, help="Clean images per batch [recipe]."),
        click.option("--lr", type=click.FloatRange(min=0, min_open=True), default=None, help="Peak learning rate [recipe]."),
        click.option("--optimizer", type=click.Choice(["sgd", "adam"]), default=None, help="Optimizer [sgd]."),
        click.option("--schedule", type=click.Choice(["onecycle", "cosine", "step", "constant"]), default=None, help="LR schedule [recipe]."),
        click.option("--augment/--no-augment", default=None, help="Random crop + flip in batch [recipe]."),
        click.option("-k", "--trigger-k", type=click.IntRange(0), default=None, help="Trigger images appended to each batch [recipe]."),
        click.option("--seed", type=int, default=0, show_default=True, help="Seed for initial weights and data order."),
        click.option("--device", default=None, help="cpu, cuda, cuda:1 ... [cuda if available]."),
        click.option("--precision", type=click.Choice(["fp32", "bf16"]), default=None, help="bf16: autocast matmuls and convolutions [fp32]."),
        click.option("--compile", "compile_mode", type=click.Choice(["auto", "on", "off"]), default=None, help="torch.compile the model: off (default), on, or auto (CUDA only)."),
        click.option("--hardening", type=click.Choice(["none", "margin"]), default=None,
                     help="margin: push each step's triggers up the loss before training on them (Kim et al. 2023) [none]."),
        click.option("--margin-epsilon", type=click.FloatRange(0, 1, min_open=True), default=None,
                     help="Margin hardening: L-infinity budget in pixel units of [0, 1] [0.03]."),
        click.option("--margin-steps", type=click.IntRange(1), default=None, help="Margin hardening: ascent steps per training step [3]."),
        click.option("--margin-step-size", type=click.FloatRange(min=0, min_open=True), default=None,
                     help="Margin hardening: size of each ascent step [2.5 x epsilon / steps]."),
        click.option("--resume", is_flag=True, help="Continue an interrupted run from its last finished epoch."),
        click.option("--force", is_flag=True, help="Overwrite the output file if it exists."),
        click.option("--quiet", "-q", is_flag=True, help="No progress output."),
        click.option("--json", "as_json", is_flag=True, help="Print the result as JSON."),
    ]
    for opt in reversed(opts):
        fn = opt(fn)
    return fn


def train_config(base, o: dict):
    import dataclasses

    margin = [k for k in ("margin_epsilon", "margin_steps", "margin_step_size") if o.get(k) is not None]
    if margin and (o.get("hardening") or base.hardening) != "margin":
        raise click.UsageError(f"{', '.join('--' + k.replace('_', '-') for k in margin)} go with --hardening margin")
    try:
        cfg = base.replace(
            epochs=o["epochs"], batch_size=o["batch_size"], lr=o["lr"], optimizer=o["optimizer"], schedule=o["schedule"],
            augment=o["augment"], trigger_k=o["trigger_k"], seed=o["seed"], precision=o["precision"], compile=o["compile_mode"],
            epoch_steps=o["epoch_steps"] or None,
            hardening=o["hardening"], margin_epsilon=o["margin_epsilon"], margin_steps=o["margin_steps"],
            margin_step_size=o["margin_step_size"],
        )
        return dataclasses.replace(cfg, epoch_steps=None) if o["epoch_steps"] == 0 else cfg  # 0: back to whole passes
    except ValueError as e:
        raise click.UsageError(str(e)) from None


def load_data(o: dict):
    from ..data import load_dataset

    return load_dataset(o["dataset"], o["data_dir"], train_size=o["train_size"], test_size=o["test_size"], seed=o["seed"])


def load_keys(marking_key: str, verification_key: str | None):
    from ..core.keygen import load_pair

    vk_path = verification_key or str(Path(marking_key).with_name("verification-key.json"))
    if verification_key is None and not Path(vk_path).exists():
        raise click.UsageError(f"no verification key next to {marking_key}; pass --verification-key")
    return load_pair(marking_key, vk_path)


def history_text(history) -> str:
    last = history[-1]
    trig = "" if last.trigger_acc is None else f", trigger accuracy {100 * last.trigger_acc:.1f}%"
    return f"test accuracy {100 * last.test_acc:.2f}%{trig} after {last.epoch} epochs"


def load_owner_key(path: str | None, marking_key: str):
    """The owner key given, or owner-key.pem next to the marking key (where keygen puts it)."""
    from ..crypto import OwnerKey

    p = Path(path) if path else Path(marking_key).with_name("owner-key.pem")
    if not p.exists():
        raise click.UsageError(f"no owner key at {p}; pass --owner-key (the Ed25519 key that signed the verification key)")
    return OwnerKey.load(p)
